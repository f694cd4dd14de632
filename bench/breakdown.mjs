// Where the fused step's time goes: each GEMM of lora.cpp's fused forward and backward, timed alone
// on the loaded BLAS and on the built-in GEMM, side by side (alternating rounds, medians).
// Usage: node bench/breakdown.mjs [M I O r] [--rounds N]
import { parseArgs } from 'node:util';
import { native } from '../dist/backends/cpu/binding.js';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { rounds: { type: 'string', default: '5' } } });
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
};
const backends = ['blas', 'builtin'];
const samples = {};
for (let round = 0; round < Number(values.rounds); round++) {
  for (const [name, a] of Object.entries(ops)) {
    for (const backend of backends) {
      const key = `${name} ${backend}`;
      (samples[key] ??= []);
      native.gemm({ ...a, backend });
      const t0 = process.hrtime.bigint();
      native.gemm({ ...a, backend });
      samples[key].push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  }
}
const med = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[s.length >> 1]; };
console.log(`M=${M} I=${I} O=${O} r=${r}`);
for (const name of Object.keys(ops)) {
  const m = backends.map((b) => med(samples[`${name} ${b}`]));
  const flops = 2 * ops[name].M * ops[name].N * ops[name].K;
  console.log(`${name}  blas ${m[0].toFixed(3).padStart(9)} ms (${(flops / m[0] / 1e6).toFixed(0).padStart(4)} GF/s)  builtin ${m[1].toFixed(3).padStart(9)} ms (${(flops / m[1] / 1e6).toFixed(0).padStart(4)} GF/s)`);
}
