// K adapters trained together in one MultiLoRALinear batch against the same K adapters each in its
// own LinearLoRA, stepped one after another on the same rows, side by side in one process. A step is
// forward, backward with dx (the layer sits inside a model) and an AdamW step of every adapter; both
// sides share one frozen base Linear, rank 16, fp32 (or, with --dtype bfloat16 / --quantize int8|nf4,
// a reduced-precision base for both sides). The multi-adapter batch is grouped by adapter
// (as a service would build it); one interleaved column shows what mixing rows costs.
//
// Each side runs at each thread setting (setNumThreads 1 and the machine's cores: a user of either
// would try both); the best of each is reported and every time recorded. Alternating rounds with the
// order rotated, medians; writes bench/results/<date>-<host>-multi.json with the machine, commit,
// command and the load before each configuration, and beside it the chart of the speed-up over K and
// m (<same name>.svg). The grid is K in {4, 8, 32} x m in {1, 16, 128} at I = O = 4096, plus the same
// at I = O = 1024 (where W fits in the last-level cache, for contrast) without K = 32 x 128.
//
// Usage: npm run build:ts (dist/ and bench/dist/) && node bench/multi-adapter.mjs [--rounds 5] [--budget 300] [--quick] [--dtype float32|bfloat16] [--quantize int8|nf4] [--out bench/results]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { AdamW, backendInfo, Linear, LinearLoRA, MultiLoRALinear, setNumThreads, tensor } from '../dist/index.js';
import { commit, machine } from './dist/bench.js';
import { Random } from '../dist/random.js';
import { median, quantile } from '../dist/stats.js';
import { speedupChartSvg } from './multi-chart.mjs';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' }, budget: { type: 'string', default: '300' }, quick: { type: 'boolean', default: false },
    out: { type: 'string', default: path.join(root, 'bench', 'results') },
    dtype: { type: 'string', default: 'float32' }, quantize: { type: 'string' },
  },
});
if (!['float32', 'bfloat16'].includes(values.dtype)) throw new Error(`--dtype: expected float32 or bfloat16, got ${values.dtype}`);
if (values.quantize !== undefined && !['int8', 'nf4'].includes(values.quantize)) throw new Error(`--quantize: expected int8 or nf4, got ${values.quantize}`);
// The base of both sides: float32, bfloat16 (W and the activations) or a quantized W.
const baseOpts = { ...(values.dtype === 'bfloat16' ? { dtype: 'bfloat16' } : {}), ...(values.quantize ? { quantize: values.quantize } : {}) };
const act = values.dtype;
const baseLabel = [values.quantize, values.dtype === 'bfloat16' ? 'bf16' : values.quantize ? 'fp32 activations' : 'fp32'].filter(Boolean).join(', ');
const fileTag = [values.dtype === 'bfloat16' ? 'bf16' : '', values.quantize ?? ''].filter(Boolean).map((t) => `-${t}`).join('');
const rounds = Number(values.rounds), budgetMs = Number(values.budget);
const r = 16;
const cores = os.cpus().length;
const THREADS = [...new Set([1, cores])];
// [K, rows per adapter, I = O]
const CONFIGS = values.quick
  ? [[4, 16, 1024], [8, 16, 1024]]
  : [[4, 1, 1024], [4, 16, 1024], [4, 128, 1024], [8, 1, 1024], [8, 16, 1024], [8, 128, 1024], [32, 1, 1024], [32, 16, 1024],
    ...[4, 8, 32].flatMap((K) => [1, 16, 128].map((m) => [K, m, 4096]))];

const rand = (n, scale, seed) => new Random(seed).fillUniform(new Float32Array(n), scale);  // U(-scale, scale)

function build(K, m, I) {
  const O = I;
  const base = new Linear(I, O, { weight: rand(O * I, 1 / Math.sqrt(I), 1), ...baseOpts });
  const names = Array.from({ length: K }, (_, k) => `a${k}`);
  const specs = Object.fromEntries(names.map((n, k) => [n, { rank: r, alpha: 2 * r, seed: 100 + k }]));
  const multi = new MultiLoRALinear(base, { adapters: specs });
  const single = names.map((n, k) => new LinearLoRA(base, r, { alpha: 2 * r, seed: 100 + k }));
  const multiOpts = names.map((n) => new AdamW(multi.adapter(n).parameters(), { lr: 1e-4 }));
  const singleOpts = single.map((l) => new AdamW(l.parameters(), { lr: 1e-4 }));
  const xs = names.map((_, k) => rand(m * I, 1, 10 + k)), dys = names.map((_, k) => rand(m * O, 1, 50 + k));
  const cat = (parts, width) => {
    const out = new Float32Array(K * m * width);
    parts.forEach((p, k) => out.set(p, k * m * width));
    return out;
  };
  const x = tensor(cat(xs, I), [K * m, I], { dtype: act }), dy = tensor(cat(dys, O), [K * m, O], { dtype: act });
  const grouped = names.flatMap((n) => Array(m).fill(n));
  // The same rows interleaved: row j of every adapter, then row j + 1.
  const perm = Array.from({ length: K * m }, (_, i) => (i % K) * m + Math.floor(i / K));
  const shuffle = (t, width) => {
    const src = t.dataSync(), out = new Float32Array(src.length);
    perm.forEach((from, to) => out.set(src.subarray(from * width, (from + 1) * width), to * width));
    return tensor(out, [K * m, width], { dtype: act });
  };
  const xi = shuffle(x, I), dyi = shuffle(dy, O), interleaved = perm.map((from) => grouped[from]);
  const xsT = xs.map((v) => tensor(v, [m, I], { dtype: act })), dysT = dys.map((v) => tensor(v, [m, O], { dtype: act }));
  const stepAll = (opts) => { for (const o of opts) { o.step(); o.zeroGrad(); } };
  return {
    multi: () => { multi.forward(x, { adapterNames: grouped }); multi.backward(dy); stepAll(multiOpts); },
    multiInterleaved: () => { multi.forward(xi, { adapterNames: interleaved }); multi.backward(dyi); stepAll(multiOpts); },
    single: () => {
      single.forEach((l, k) => { l.forward(xsT[k]); l.backward(dysT[k]); });
      stepAll(singleOpts);
    },
    dispose: () => { multi.dispose(); single.forEach((l) => l.dispose()); base.dispose(); },
  };
}

function timeTask(fn, reps) {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < reps; i++) fn();
  return Number(process.hrtime.bigint() - t0) / 1e6 / reps;
}

const loadStart = os.loadavg();
const rows = [];
for (const [K, m, I] of CONFIGS) {
  const load1 = +os.loadavg()[0].toFixed(2);
  const tasks = build(K, m, I);
  const names = ['multi', 'multiInterleaved', 'single'];
  const times = {};
  for (const threads of THREADS) {
    setNumThreads(threads);
    const est = {};
    for (const n of names) est[n] = timeTask(tasks[n], 1);  // warm-up and estimate
    const reps = Object.fromEntries(names.map((n) => [n, Math.max(1, Math.round(budgetMs / rounds / Math.max(est[n], 0.01)))]));
    const samples = Object.fromEntries(names.map((n) => [n, []]));
    for (let round = 0; round < rounds; round++) {
      const order = names.map((_, i) => names[(i + round) % names.length]);
      for (const n of order) samples[n].push(timeTask(tasks[n], reps[n]));
    }
    times[threads] = Object.fromEntries(names.map((n) => {
      const s = samples[n], med = median(s);
      return [n, { ms: +med.toFixed(4), spread: +((quantile(s, 0.75) - quantile(s, 0.25)) / med).toFixed(3), samples: s.length, reps: reps[n] }];
    }));
  }
  setNumThreads(cores);
  tasks.dispose();
  const best = (n) => Math.min(...THREADS.map((t) => times[t][n].ms));
  const bestThreads = (n) => THREADS.find((t) => times[t][n].ms === best(n));
  const row = {
    K, rowsPerAdapter: m, M: K * m, I, O: I, r, load1, times,
    best: {
      multi: { ms: best('multi'), threads: bestThreads('multi') },
      multiInterleaved: { ms: best('multiInterleaved'), threads: bestThreads('multiInterleaved') },
      single: { ms: best('single'), threads: bestThreads('single') },
    },
  };
  row.rowsPerSecond = { multi: Math.round((K * m * 1000) / row.best.multi.ms), single: Math.round((K * m * 1000) / row.best.single.ms) };
  row.speedup = +(row.best.single.ms / row.best.multi.ms).toFixed(2);
  row.speedupInterleaved = +(row.best.single.ms / row.best.multiInterleaved.ms).toFixed(2);
  rows.push(row);
  console.log(`K=${String(K).padStart(2)} m=${String(m).padStart(3)} I=O=${String(I).padStart(4)}  one batch ${row.best.multi.ms.toFixed(2).padStart(8)} ms` +
    `  (interleaved ${row.best.multiInterleaved.ms.toFixed(2).padStart(8)})  one by one ${row.best.single.ms.toFixed(2).padStart(8)} ms` +
    `  speed-up ${row.speedup.toFixed(2)}x (interleaved ${row.speedupInterleaved.toFixed(2)}x)  load ${load1}`);
}
const info = backendInfo();
const result = {
  date: new Date().toISOString(), machine: machine(), commit: commit(), command: `node bench/multi-adapter.mjs ${process.argv.slice(2).join(' ')}`.trim(),
  loadavg: { start: loadStart, end: os.loadavg() },
  ours: { blas: info.cpu.blas, threadsTried: THREADS },
  peer: {
    what: 'the same K adapters, each a LinearLoRA over the same base, stepped one after another on its own rows',
    config: `each thread setting of setNumThreads (${THREADS.join(', ')}); best reported, all recorded in times`,
  },
  method: `per configuration and thread setting: one warm-up step of each task, then ${rounds} alternating rounds (order rotated) of about ${budgetMs / rounds} ms per task; medians. A step: forward, backward with dx, AdamW step and zeroGrad of every adapter. rank ${r}; base ${baseLabel} (the adapters fp32).`,
  base: { dtype: values.dtype, quantize: values.quantize ?? null, lowpKernel: info.cpu.lowpKernel },
  rows,
};
fs.mkdirSync(values.out, { recursive: true });
const file = path.join(values.out, `${result.date.slice(0, 10)}-${os.hostname()}-multi${fileTag}${values.quick ? '-quick' : ''}.json`);
fs.writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
const svg = file.replace(/\.json$/, '.svg');
fs.writeFileSync(svg, speedupChartSvg(rows, 'K adapters in one MultiLoRALinear batch vs. one LinearLoRA at a time',
  `rank ${r}, base ${baseLabel}, forward + backward with dx + AdamW; ${result.machine.cores} cores, ${info.cpu.blas}, commit ${result.commit}; best of ${THREADS.join(' / ')} threads per side`));
console.log(`wrote ${path.relative(process.cwd(), file)} and ${path.basename(svg)}; load ${loadStart.map((v) => v.toFixed(2)).join(' ')} -> ${os.loadavg().map((v) => v.toFixed(2)).join(' ')}`);
