// A reduced-precision frozen base against fp32, side by side in one process: per shape, the frozen
// GEMM alone (Linear.forward), the decode forward (M <= 8: LinearLoRA.forward) and the training step
// (LinearLoRA forward + backward with dx), for a float32 base, a bfloat16 layer (bf16 W and
// activations), and int8 and nf4 bases (float32 activations; the GEMMs round them to bf16 as they
// pack). Beside them the PyTorch peer (bench/peers/torch_cpu.py, where /usr/bin/python3 has torch) in
// fp32, in bf16 tensors and under torch.autocast to bf16, each in its defaults and at 1 .. nproc
// threads, one process each, timed in every round; per precision the fastest is reported and all are
// recorded. Then the targets, met or not, and the accuracy of each config's forward against float64
// of the original W and of the dequantized one. Interleaved rounds, medians; writes
// bench/results/<date>-<host>-lowp.json with the machine, commit, command, load, kernels and peers.
//
// Usage: npm run build:ts && node bench/lowp.mjs [--quick | --decode] [--rounds 5] [--out bench/results] [--no-peer] [--python PATH]
// (--decode: the four decode rows of the full run, alone)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { backendInfo, Linear, LinearLoRA, tensor, zeros } from '../dist/index.js';
import { commit, machine } from './dist/bench.js';
import { peerConfigs, TorchPeer } from './dist/peer.js';
import { Random } from '../dist/random.js';
import { median } from '../dist/stats.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false }, decode: { type: 'boolean', default: false }, rounds: { type: 'string', default: '5' },
    out: { type: 'string', default: path.join(root, 'bench', 'results') },
    'no-peer': { type: 'boolean', default: false },
    python: { type: 'string', default: fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3' },
  },
});
const rounds = Number(values.rounds), r = 16, alpha = 16;
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
// The peer's task for each of ours: F.linear alone, the no-grad forward, forward + backward (dx, dA, dB).
const PEER_TASK = { gemm: 'base', decode: 'forward', step: 'step' };
const DECODE_MIN_MS = 50;  // a decode sample is the mean over calls filling this long, ours and the peer's
// The accuracy check: rows through the decode path (M <= 8) and through the blocked GEMM, for a W
// drawn uniform (as the timed tasks') and one drawn normal with the same spread (trained weights are
// closer to normal, and each format's rounding error depends on the distribution it meets).
const ACCURACY = { sizes: [2048, 4096], rows: [8, 64], weights: ['uniform', 'normal'] };

const rand = (n, scale, seed) => new Random(seed).fillUniform(new Float32Array(n), scale);  // U(-scale, scale)
/** N(0, std²) by Box-Muller, from the package's generator. */
function normal(n, std, seed) {
  const g = new Random(seed), out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = 1 - g.next(), v = g.next(), rad = std * Math.sqrt(-2 * Math.log(u));
    out[i] = rad * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = rad * Math.sin(2 * Math.PI * v);
  }
  return out;
}

/** One task of one config: a function that runs it once, and its flop count. */
function task(kind, M, I, O, cfg, W, X, DY) {
  const dtype = cfg.opts.dtype ?? 'float32';
  const base = new Linear(I, O, { weight: W, ...cfg.opts });
  const x = tensor(X, [M, I], { dtype });
  const y = zeros([M, O], { dtype });
  if (kind === 'gemm') return { run: () => base.forward(x, { out: y }), flops: 2 * M * I * O, base };
  const layer = new LinearLoRA(base, r, { alpha, seed: 1, B: rand(r * O, 0.01, 5) });
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

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** y = x·Wᵀ + scaling·(x·A)·B in float64, x (M, I), W (O, I), A (I, r), B (r, O). */
function reference(x, W, A, B, scaling, M, I, O) {
  const y = new Float64Array(M * O), s = new Float64Array(r);
  for (let m = 0; m < M; m++) {
    const xo = m * I;
    s.fill(0);
    for (let i = 0; i < I; i++) for (let j = 0; j < r; j++) s[j] += x[xo + i] * A[i * r + j];
    for (let o = 0; o < O; o++) {
      const wo = o * I;
      let acc = 0;
      for (let i = 0; i < I; i++) acc += x[xo + i] * W[wo + i];
      for (let j = 0; j < r; j++) acc += scaling * s[j] * B[j * O + o];
      y[m * O + o] = acc;
    }
  }
  return y;
}

/** ‖got − want‖₂ / ‖want‖₂, and the largest |got − want| over want's root mean square. */
function errors(got, want) {
  let num = 0, den = 0, max = 0;
  for (let i = 0; i < want.length; i++) {
    const d = got[i] - want[i];
    num += d * d;
    den += want[i] * want[i];
    max = Math.max(max, Math.abs(d));
  }
  return { rel: +Math.sqrt(num / den).toExponential(3), maxOverRms: +(max / Math.sqrt(den / want.length)).toExponential(3) };
}

/**
 * Per config, the LinearLoRA forward's error against float64 of the original fp32 W and x (what a
 * user loses: the format's rounding of W, and of x for a bf16 layer, plus the kernel's) and against
 * float64 of the values the layer holds, Ŵ (weight.dataSync()) and x as its tensor holds it (the
 * kernel's own arithmetic: x rounded to bf16 as the GEMM packs it, fp32 sums, y's rounding in bf16).
 */
function accuracy() {
  const out = [];
  for (const n of ACCURACY.sizes) for (const weights of ACCURACY.weights) {
    const I = n, O = n;
    // The same standard deviation either way, 1/sqrt(3I).
    const W = weights === 'uniform' ? rand(O * I, 1 / Math.sqrt(I), 1) : normal(O * I, 1 / Math.sqrt(3 * I), 1);
    const B = rand(r * O, 0.01, 5);
    for (const M of ACCURACY.rows) {
      const X = rand(M * I, 1, 2);
      let original = null;
      const configs = {};
      for (const cfg of CONFIGS) {
        const dtype = cfg.opts.dtype ?? 'float32';
        const base = new Linear(I, O, { weight: W, ...cfg.opts });
        const layer = new LinearLoRA(base, r, { alpha, seed: 1, B });
        layer.eval();
        const x = tensor(X, [M, I], { dtype });
        const y = layer.forward(x).dataSync();
        const A = layer.lora.A.dataSync();
        original ??= reference(X, W, A, B, layer.scaling, M, I, O);
        const held = reference(x.dataSync(), base.weight.dataSync(), A, B, layer.scaling, M, I, O);
        configs[cfg.name] = { vsOriginal: errors(y, original), vsDequantized: errors(y, held) };
        layer.dispose();
      }
      out.push({ weights, M, I, O, r, configs });
      console.log(`accuracy ${weights.padEnd(7)} M=${String(M).padEnd(3)} ${I}x${O}  ` +
        CONFIGS.map((c) => `${c.name} ${configs[c.name].vsOriginal.rel.toExponential(1)} / ${configs[c.name].vsDequantized.rel.toExponential(1)}`).join('  ') +
        '   (rel. error vs original W / vs held W)');
    }
  }
  return out;
}

// The peers: each precision in each thread configuration, one process each, all started before the
// first shape (bench/cpu/peer.ts); a process that fails to start is noted and left out.
const PRECISIONS = ['fp32', 'bf16', 'autocast'];
const peers = [];
const peerSkipped = [];
let peerNote;
if (values['no-peer']) peerNote = 'skipped (--no-peer)';
else {
  for (const precision of PRECISIONS) {
    for (const config of peerConfigs(os.availableParallelism())) {
      const p = await TorchPeer.start(values.python, config, precision);
      if (typeof p === 'string') peerSkipped.push(`${precision} ${config}: ${p}`);
      else peers.push(p);
    }
  }
  peerNote = peers.length
    ? `PyTorch ${peers[0].info.torch} (${peers[0].info.python}, BLAS_INFO=${peers[0].info.blas}): ` +
      peers.map((p) => `${p.info.precision} ${p.info.label} (torch ${p.info.threads} threads, BLAS ${p.info.blasThreads?.threads ?? '?'})`).join(', ') +
      (peerSkipped.length ? `; not started: ${peerSkipped.join('; ')}` : '')
    : `skipped: ${peerSkipped[0]?.replace(/^[^:]*: /, '') ?? 'no configuration'}`;
}
const peerName = (p) => `${p.info.precision} ${p.info.label}`;
// Which of our configs a peer precision is compared with: bf16 tensors and autocast both count as PyTorch's bf16.
const peerSide = (p) => (p.info.precision === 'fp32' ? 'fp32' : 'bf16');

const info = backendInfo().cpu;
const m = machine();
const ranAt = commit();  // the tree as the run started
const loadStart = os.loadavg();
console.log(`fused-lora lowp bench: ${m.cpu}, ${m.cores} cores, ${info.threads} threads, BLAS ${info.blas}, kernels ${info.lowpKernel} / ${info.builtinKernel}; load ${loadStart.map((v) => v.toFixed(2)).join(' ')}`);
console.log(`peer: ${peerNote}`);

const accuracyRows = accuracy();

const rows = [];
try {
  for (const [kind, M, I, O] of SHAPES) {
    const W = rand(O * I, 1 / Math.sqrt(I), 1), X = rand(M * I, 1, 2), DY = rand(M * O, 1, 3);
    const tasks = CONFIGS.map((c) => ({ cfg: c, ...task(kind, M, I, O, c, W, X, DY) }));
    const minMs = kind === 'decode' ? DECODE_MIN_MS : 0;
    for (const t of tasks) t.run();  // warm-up: workspaces, thread pool, caches
    for (const p of peers) {
      await p.setup({ M, I, O, r, scaling: alpha / r, bias: false });
      await p.time(PEER_TASK[kind], 1);
    }
    const samples = tasks.map(() => []);
    const peerSamples = peers.map(() => []);
    for (let k = 0; k < rounds; k++) {
      for (let j = 0; j < tasks.length; j++) {
        const i = (j + k) % tasks.length;  // rotated order per round
        samples[i].push(timeOnce(tasks[i].run, kind === 'decode' ? DECODE_MIN_MS : 1));
      }
      for (let j = 0; j < peers.length; j++) {
        const i = (j + k) % peers.length;
        peerSamples[i].push(...await peers[i].time(PEER_TASK[kind], 1, minMs));
        await sleep(150);  // the peer's idle BLAS threads spin for ~0.1 s after a call (bench/NOTES.md)
      }
    }
    const ms = samples.map(median);
    const flops = tasks[0].flops;
    const peerConfigsOut = Object.fromEntries(peers.map((p, i) => {
      const t = median(peerSamples[i]);
      return [peerName(p), { ms: +t.toFixed(4), gflops: +(flops / t / 1e6).toFixed(1), samples: peerSamples[i].map((v) => +v.toFixed(4)) }];
    }));
    const best = {};
    for (const side of ['fp32', 'bf16']) {
      const mine = peers.filter((p) => peerSide(p) === side);
      if (!mine.length) continue;
      const fastest = mine.reduce((a, p) => (peerConfigsOut[peerName(p)].ms < peerConfigsOut[peerName(a)].ms ? p : a));
      const t = peerConfigsOut[peerName(fastest)].ms;
      const ours = ms[CONFIGS.findIndex((c) => c.name === side)];
      best[side] = { config: peerName(fastest), ms: t, gflops: peerConfigsOut[peerName(fastest)].gflops, peerOverOurs: +(t / ours).toFixed(3) };
    }
    const row = {
      task: kind, M, I, O, r,
      configs: Object.fromEntries(tasks.map((t, i) => [t.cfg.name, {
        ms: +ms[i].toFixed(4), gflops: +(t.flops / ms[i] / 1e6).toFixed(1), speedupVsFp32: +(ms[0] / ms[i]).toFixed(3),
        weightBytes: t.base.frozenBytes().weight, samples: samples[i].map((v) => +v.toFixed(4)),
      }])),
      peer: peers.length ? { task: PEER_TASK[kind], best, configs: peerConfigsOut } : null,
      load1: +os.loadavg()[0].toFixed(2),
    };
    rows.push(row);
    console.log(`${kind.padEnd(6)} M=${String(M).padEnd(4)} ${I}x${O}  ` +
      tasks.map((t, i) => `${t.cfg.name} ${ms[i].toFixed(2)} ms (${(ms[0] / ms[i]).toFixed(2)}x)`).join('  ') +
      (peers.length ? '  PyTorch ' + Object.entries(best).map(([side, b]) => `${side} ${b.ms.toFixed(2)} ms [${b.config}]`).join(', ') : '') +
      `  load ${row.load1}`);
  }
} finally {
  for (const p of peers) p.close();
}

// The targets: each "met" or "NOT MET" from this run's medians, or "not measured" where a row or the peer is missing.
const rowOf = (kind, M, I, O) => rows.find((x) => x.task === kind && x.M === M && x.I === I && x.O === O);
function target(name, want, measure) {
  const v = measure();
  const status = v === null ? 'not measured' : v >= want.min || v <= want.max ? 'met' : 'NOT MET';
  const line = { target: name, want: want.text, measured: v === null ? null : +v.toFixed(3), status };
  console.log(`target: ${name} ${want.text}: ${v === null ? '-' : `${v.toFixed(2)}x`} ${status}`);
  return line;
}
const atLeast = (x) => ({ min: x, max: -Infinity, text: `>= ${x}x` });
const atMost = (x) => ({ min: Infinity, max: x, text: `<= ${x}x` });
const speedup = (kind, M, I, O, cfg) => () => rowOf(kind, M, I, O)?.configs[cfg].speedupVsFp32 ?? null;
const overPeer = (kind, M, I, O) => () => {
  const row = rowOf(kind, M, I, O);
  return row?.peer?.best.bf16 ? row.peer.best.bf16.ms / row.configs.bf16.ms : null;
};
const targets = [
  target('bf16 GEMM GFLOP/s over our fp32 GEMM, 2048^3', atLeast(1.8), speedup('gemm', 2048, 2048, 2048, 'bf16')),
  target('bf16 step over our fp32 step, M=2048 I=O=2048', atLeast(1.7), speedup('step', 2048, 2048, 2048, 'bf16')),
  target('bf16 step over our fp32 step, M=512 I=O=4096', atLeast(1.7), speedup('step', 512, 4096, 4096, 'bf16')),
  target("bf16 step over PyTorch's fastest bf16 step, M=2048 I=O=2048", atLeast(1.5), overPeer('step', 2048, 2048, 2048)),
  target("bf16 step over PyTorch's fastest bf16 step, M=512 I=O=4096", atLeast(1.5), overPeer('step', 512, 4096, 4096)),
  target('bf16 decode over our fp32 decode, M=1 4096^2', atLeast(1.8), speedup('decode', 1, 4096, 4096, 'bf16')),
  target('int8 decode over our fp32 decode, M=1 4096^2', atLeast(3), speedup('decode', 1, 4096, 4096, 'int8')),
  target('nf4 decode over our fp32 decode, M=1 4096^2', atLeast(4), speedup('decode', 1, 4096, 4096, 'nf4')),
  target('nf4 step time over our bf16 step time, M=2048 I=O=2048', atMost(1.15), () => {
    const row = rowOf('step', 2048, 2048, 2048);
    return row ? row.configs.nf4.ms / row.configs.bf16.ms : null;
  }),
];

const result = {
  date: new Date().toISOString(), machine: m, commit: ranAt,
  command: `node bench/lowp.mjs ${process.argv.slice(2).join(' ')}`.trim(),
  kernels: { builtinKernel: info.builtinKernel, lowpKernel: info.lowpKernel, lowpKernelReason: info.lowpKernelReason, blas: info.blas, threads: info.threads },
  method: `per shape, each config and peer process warmed up once, then ${rounds} rounds, ours then the peer's, each in an order rotated per round, 150 ms after each peer call; ` +
    `one sample is one call (decode: the mean over >= ${DECODE_MIN_MS} ms of calls, ours and the peer's); medians. fp32 runs on the BLAS from M = 9 (the product's default route), ` +
    'the others on the built-in reduced-precision GEMM. The peer runs the same tasks in PEFT\'s order without a bias (gemm: F.linear; decode: the no-grad forward; step: forward + backward for x, A, B); ' +
    'per row, peer.best.fp32 and peer.best.bf16 are the fastest of its fp32 processes and of its bf16-tensor and autocast processes, peer.configs has every one.',
  peer: { note: peerNote, processes: peers.map((p) => p.info), skipped: peerSkipped },
  loadStart: loadStart.map((v) => +v.toFixed(2)), loadEnd: os.loadavg().map((v) => +v.toFixed(2)),
  rows,
  targets,
  accuracy: {
    method: `LinearLoRA (r = ${r}, alpha = ${alpha}, B ~ U(+-0.01)) eval forward of x ~ U(+-1) rows, W ~ U(+-1/sqrt(I)) (weights: uniform) or N(0, 1/(3I)) (normal, the same spread); rel = ||y - ref|| / ||ref||, maxOverRms = max |y - ref| / rms(ref). ` +
      'vsOriginal: ref in float64 from the original fp32 W and x (the format\'s error and the kernel\'s); vsDequantized: ref in float64 from the W the layer holds (weight.dataSync(): bf16 W, or the dequantized codes) and x as its tensor holds it (the kernel\'s own error).',
    rows: accuracyRows,
  },
};
fs.mkdirSync(values.out, { recursive: true });
const file = path.join(values.out, `${result.date.slice(0, 10)}-${os.hostname()}-lowp${values.quick ? '-quick' : values.decode ? '-decode' : ''}.json`);
fs.writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
console.log(`wrote ${path.relative(root, file)}; kernels ${info.lowpKernel} / ${info.builtinKernel}, blas ${info.blas}`);
