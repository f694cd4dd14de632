// A reduced-precision frozen base against fp32, side by side in one process: per shape, the frozen
// GEMM alone (Linear.forward), the decode forward (M <= 8: LinearLoRA.forward) and the training step
// (LinearLoRA forward + backward with dx), for a float32 base, a bfloat16 layer (bf16 W and
// activations), and int8 and nf4 bases (float32 activations; the GEMMs round them to bf16 as they
// pack). Interleaved rounds, medians; prints ratios to fp32 and writes
// bench/results/<date>-<host>-lowp.json with the machine, commit, command, load and kernels.
//
// Usage: npm run build:ts && node bench/lowp.mjs [--quick | --decode] [--rounds 5] [--out bench/results]
// (--decode: the four decode rows of the full run, alone)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { backendInfo, Linear, LinearLoRA, tensor, zeros } from '../dist/index.js';
import { commit, machine } from './dist/bench.js';
import { Random } from '../dist/random.js';
import { median } from '../dist/stats.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({
  options: { quick: { type: 'boolean', default: false }, decode: { type: 'boolean', default: false }, rounds: { type: 'string', default: '5' }, out: { type: 'string', default: path.join(root, 'bench', 'results') } },
});
const rounds = Number(values.rounds), r = 16;
const CONFIGS = [
  { name: 'fp32', opts: {} },
  { name: 'bf16', opts: { dtype: 'bfloat16' } },
  { name: 'int8', opts: { quantize: 'int8' } },
  { name: 'nf4', opts: { quantize: 'nf4' } },
];
// [task, M, I, O]
const DECODE = [['decode', 1, 4096, 4096], ['decode', 8, 4096, 4096], ['decode', 1, 4096, 11008], ['decode', 8, 4096, 11008]];
const SHAPES = values.quick
  ? [['gemm', 2048, 2048, 2048], ['step', 2048, 2048, 2048], ['decode', 1, 4096, 4096]]
  : values.decode ? DECODE
  : [['gemm', 2048, 2048, 2048], ['step', 2048, 2048, 2048], ['step', 512, 4096, 4096], ['step', 512, 4096, 11008], ...DECODE];

const rand = (n, scale, seed) => new Random(seed).fillUniform(new Float32Array(n), scale);  // U(-scale, scale)

/** One task of one config: a function that runs it once, and its flop count. */
function task(kind, M, I, O, cfg, W, X, DY) {
  const dtype = cfg.opts.dtype ?? 'float32';
  const base = new Linear(I, O, { weight: W, ...cfg.opts });
  const x = tensor(X, [M, I], { dtype });
  const y = zeros([M, O], { dtype });
  if (kind === 'gemm') return { run: () => base.forward(x, { out: y }), flops: 2 * M * I * O, base };
  const layer = new LinearLoRA(base, r, { alpha: 16, seed: 1, B: rand(r * O, 0.01, 5) });
  if (kind === 'decode') return { run: () => layer.forward(x, { out: y }), flops: 2 * M * (I * O + r * (I + O)), base };
  const dy = tensor(DY, [M, O], { dtype });
  const dx = zeros([M, I], { dtype });
  return {
    run: () => { layer.forward(x, { out: y }); layer.backward(dy, { out: dx }); layer.zeroGrad(); },
    flops: 2 * M * (2 * I * O + 3 * r * (I + O)), base,
  };
}

function timeOnce(fn, minMs) {
  let n = 0;
  const t0 = process.hrtime.bigint();
  let t = 0;
  do { fn(); n++; t = Number(process.hrtime.bigint() - t0) / 1e6; } while (t < minMs);
  return t / n;
}

const info = backendInfo().cpu;
const rows = [];
const loadStart = os.loadavg();
for (const [kind, M, I, O] of SHAPES) {
  const W = rand(O * I, 1 / Math.sqrt(I), 1), X = rand(M * I, 1, 2), DY = rand(M * O, 1, 3);
  const tasks = CONFIGS.map((c) => ({ cfg: c, ...task(kind, M, I, O, c, W, X, DY) }));
  for (const t of tasks) t.run();  // warm-up: workspaces, thread pool, caches
  const samples = tasks.map(() => []);
  for (let k = 0; k < rounds; k++) {
    for (let j = 0; j < tasks.length; j++) {
      const i = (j + k) % tasks.length;  // rotated order per round
      samples[i].push(timeOnce(tasks[i].run, kind === 'decode' ? 50 : 1));
    }
  }
  const ms = samples.map(median);
  const row = {
    task: kind, M, I, O, r,
    configs: Object.fromEntries(tasks.map((t, i) => [t.cfg.name, {
      ms: +ms[i].toFixed(4), gflops: +(t.flops / ms[i] / 1e6).toFixed(1), speedupVsFp32: +(ms[0] / ms[i]).toFixed(3),
      weightBytes: t.base.frozenBytes().weight, samples: samples[i].map((v) => +v.toFixed(4)),
    }])),
    load1: +os.loadavg()[0].toFixed(2),
  };
  rows.push(row);
  console.log(`${kind.padEnd(6)} M=${String(M).padEnd(4)} ${I}x${O}  ` +
    tasks.map((t, i) => `${t.cfg.name} ${ms[i].toFixed(2)} ms (${(ms[0] / ms[i]).toFixed(2)}x)`).join('  ') + `  load ${row.load1}`);
}
const result = {
  date: new Date().toISOString(), machine: machine(), commit: commit(),
  command: `node bench/lowp.mjs ${process.argv.slice(2).join(' ')}`.trim(),
  kernels: { builtinKernel: info.builtinKernel, lowpKernel: info.lowpKernel, lowpKernelReason: info.lowpKernelReason, blas: info.blas, threads: info.threads },
  method: `per shape, each config warmed up once, then ${rounds} rounds in a rotated order; one sample is one call (decode: the mean over >= 50 ms of calls); medians. fp32 runs on the BLAS from M = 9 (the product's default route), the others on the built-in reduced-precision GEMM.`,
  loadStart: loadStart.map((v) => +v.toFixed(2)), loadEnd: os.loadavg().map((v) => +v.toFixed(2)),
  rows,
};
fs.mkdirSync(values.out, { recursive: true });
const file = path.join(values.out, `${result.date.slice(0, 10)}-${os.hostname()}-lowp${values.quick ? '-quick' : values.decode ? '-decode' : ''}.json`);
fs.writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
console.log(`wrote ${path.relative(root, file)}; kernels ${info.lowpKernel} / ${info.builtinKernel}, blas ${info.blas}`);
