// Where the fused step's time goes: the layer's base GEMM, fused forward and fused step, and each
// GEMM of lora.cpp's fused forward and backward timed alone on the loaded BLAS and on the built-in
// GEMM, side by side (alternating rounds; each sample is the mean of a batch of calls; medians).
// The last lines add up the products on the routes the step takes (frozen GEMMs on the BLAS past
// the addon's frozenBuiltinMaxRows, every rank-r product on the built-in GEMM; native/cpu/routes.h)
// against the step.
// Usage: node bench/breakdown.mjs [M I O r] [--rounds N] [--batch-ms MS]
import { parseArgs } from 'node:util';
import { native } from '../dist/backends/cpu/binding.js';
import { Linear, LinearLoRA, tensor } from '../dist/index.js';

const { values, positionals } = parseArgs({
  allowPositionals: true, options: { rounds: { type: 'string', default: '9' }, 'batch-ms': { type: 'string', default: '20' } },
});
const [M, I, O, r] = (positionals.length ? positionals : ['2048', '2048', '2048', '16']).map(Number);
const rand = (n) => Float32Array.from({ length: n }, () => Math.random() * 2 - 1);
const x = rand(M * I), W = rand(O * I), A = rand(I * r), B = rand(r * O), s = rand(M * r), dy = rand(M * O);
const y = new Float32Array(M * O), ds = new Float32Array(M * r), dA = new Float32Array(I * r), dB = new Float32Array(r * O), dx = new Float32Array(M * I);
const g = (transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) => ({ transA, transB, M: m, N: n, K: k, alpha, A: a, lda, B: b, ldb, beta, C: c, ldc });
const ops = {
  'fwd  s = x·A          (M,r,K=I)': g(false, false, M, r, I, 1, x, I, A, r, 0, s, r),
  'fwd  y = x·Wᵀ  beta 0 (M,O,K=I)': g(false, true, M, O, I, 1, x, I, W, I, 0, y, O),
  'fwd  y += x·Wᵀ beta 1 (M,O,K=I)': g(false, true, M, O, I, 1, x, I, W, I, 1, y, O),
  'fwd  y = s·B   beta 0 (M,O,K=r)': g(false, false, M, O, r, 1, s, r, B, O, 0, y, O),
  'fwd  y += s·B         (M,O,K=r)': g(false, false, M, O, r, 1, s, r, B, O, 1, y, O),
  'bwd  ds = dy·Bᵀ       (M,r,K=O)': g(false, true, M, r, O, 1, dy, O, B, O, 0, ds, r),
  'bwd  dB += sᵀ·dy      (r,O,K=M)': g(true, false, r, O, M, 1, s, r, dy, O, 1, dB, O),
  'bwd  dA += xᵀ·ds      (I,r,K=M)': g(true, false, I, r, M, 1, x, I, ds, r, 1, dA, r),
  'bwd  dx = dy·W        (M,I,K=O)': g(false, false, M, I, O, 1, dy, O, W, I, 0, dx, I),
  'bwd  dx += ds·Aᵀ      (M,I,K=r)': g(false, true, M, I, r, 1, ds, r, A, r, 1, dx, I),
  'bwd  dx = ds·Aᵀ beta 0(M,I,K=r)': g(false, true, M, I, r, 1, ds, r, A, r, 0, dx, I),
  'bwd  dx += dy·W beta 1(M,I,K=O)': g(false, false, M, I, O, 1, dy, O, W, I, 1, dx, I),
  'a 1×1×1 call: N-API + dispatch': g(false, false, 1, 1, 1, 1, x, 1, A, 1, 0, s, 1),
};
// The products as the fused step runs them, and the route each takes at this M.
const frozen = M > native.builtinKernels().lora.frozenBuiltinMaxRows ? 'blas' : 'builtin';
const stepParts = [
  ['fwd  s = x·A          (M,r,K=I)', 'builtin'], ['fwd  y = s·B   beta 0 (M,O,K=r)', 'builtin'], ['fwd  y += x·Wᵀ beta 1 (M,O,K=I)', frozen],
  ['bwd  ds = dy·Bᵀ       (M,r,K=O)', 'builtin'], ['bwd  dB += sᵀ·dy      (r,O,K=M)', 'builtin'], ['bwd  dA += xᵀ·ds      (I,r,K=M)', 'builtin'],
  ['bwd  dx = ds·Aᵀ beta 0(M,I,K=r)', 'builtin'], ['bwd  dx += dy·W beta 1(M,I,K=O)', frozen],
];

const base = new Linear(I, O, { seed: 1, bias: true });
const lora = new LinearLoRA(base, r, { seed: 2, B: rand(r * O).map((v) => v * 0.01) });
const X = tensor(x, [M, I]), DY = tensor(dy, [M, O]), Y = tensor(new Float32Array(M * O), [M, O]), DX = tensor(new Float32Array(M * I), [M, I]);
const layer = {
  'layer: base (Linear.forward)': () => base.forward(X, { out: Y }),
  'layer: fused forward': () => lora.forward(X, { out: Y }),
  'layer: fused step (forward + backward)': () => { lora.forward(X, { out: Y }); lora.backward(DY, { out: DX }); },
};

const hasBlas = native.backendInfo().blas.name !== 'builtin';
const backends = hasBlas ? ['blas', 'builtin'] : ['builtin'];
const fns = {};
for (const [name, f] of Object.entries(layer)) fns[name] = f;
for (const [name, a] of Object.entries(ops)) for (const b of backends) fns[`${name} ${b}`] = () => native.gemm({ ...a, backend: b });

// Batch size per function from one warm call, so each sample is ~batch-ms of calls.
const batch = {};
for (const [name, f] of Object.entries(fns)) {
  f();
  const t0 = process.hrtime.bigint();
  f();
  batch[name] = Math.max(1, Math.round(Number(values['batch-ms']) / Math.max(Number(process.hrtime.bigint() - t0) / 1e6, 1e-3)));
}
const samples = {};
const names = Object.keys(fns);
for (let round = 0; round < Number(values.rounds); round++) {
  for (const name of round % 2 ? [...names].reverse() : names) {
    const f = fns[name], n = batch[name];
    f();
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) f();
    (samples[name] ??= []).push(Number(process.hrtime.bigint() - t0) / 1e6 / n);
  }
}
lora.dispose();
const med = (xs) => { const v = [...xs].sort((a, b) => a - b); return v[v.length >> 1]; };
const m = Object.fromEntries(names.map((n) => [n, med(samples[n])]));
const ms = (v) => `${v.toFixed(4).padStart(10)} ms`;
console.log(`M=${M} I=${I} O=${O} r=${r}; BLAS ${native.backendInfo().blas.name}; medians of ${values.rounds} rounds`);
for (const name of Object.keys(layer)) console.log(`${name.padEnd(40)} ${ms(m[name])}`);
for (const name of Object.keys(ops)) {
  const flops = 2 * ops[name].M * ops[name].N * ops[name].K;
  console.log(`${name}  ` + backends.map((b) => `${b.padStart(7)} ${ms(m[`${name} ${b}`])} (${(flops / m[`${name} ${b}`] / 1e6).toFixed(0).padStart(4)} GF/s)`).join('  '));
}
const parts = stepParts.map(([n, b]) => m[`${n} ${hasBlas ? b : 'builtin'}`]);
const rank = stepParts.reduce((acc, [n, b], i) => (n.includes('W') ? acc : acc + parts[i]), 0);
const sum = parts.reduce((a, v) => a + v, 0);
const step = m['layer: fused step (forward + backward)'], baseMs = m['layer: base (Linear.forward)'];
console.log(`as routed in the step (frozen GEMMs on ${hasBlas ? frozen : 'builtin'}): rank-r products ${ms(rank)}, all products ${ms(sum)}; ` +
  `the step ${ms(step)} = ${(step / baseMs).toFixed(3)}x the base, of which the rank-r products ${(rank / baseMs).toFixed(3)}x ` +
  `and what no product accounts for (calls, wakes, caches) ${ms(step - sum)}`);
