// The checker of the wide-shape GEMM tests, checked itself: a correct float32 product passes with a
// wide margin, and each kind of corruption a blocking bug makes (one wrong entry, a tile never
// written, a NaN, a transposed operand) fails it, wherever in C it is.
import { describe, expect, it } from 'vitest';
import { native } from '../lib/backends/cpu/binding';
import { entries, freivalds, Mat, Problem } from './freivalds';
import { randomArray } from './reference';

// Wide enough to cross the built-in GEMM's N panel and K slab on every ISA.
const M = 37, N = 4133, K = 1100;
const A = randomArray(M * K, 1), B = randomArray(K * N, 2);
const C = new Float32Array(M * N).fill(NaN);
native.gemm({ transA: false, transB: false, M, N, K, alpha: 1.5, A, lda: K, B, ldb: N, beta: 0, C, ldc: N, backend: 'builtin' });
const opA: Mat = { data: A, rows: M, cols: K, ld: K, trans: false };
const opB: Mat = { data: B, rows: K, cols: N, ld: N, trans: false };
const problem = (c: Float32Array): Problem => ({ A: opA, B: opB, alpha: 1.5, extra: null, C: c, ldc: N });
const rms = Math.sqrt(C.reduce((s, v) => s + v * v, 0) / C.length);

function corrupted(f: (c: Float32Array) => void): Float32Array {
  const c = C.slice();
  f(c);
  return c;
}

describe('the Freivalds checker', () => {
  it('passes the correct product, every comparison well inside its tolerance', () => {
    const r = freivalds(problem(C), 7, 2);
    entries(problem(C), [0, 13, 14, 36], [0, 31, 32, 4079, 4080, 4095, 4096, 4132], r);
    expect(r.failures).toEqual([]);
    expect(r.checked).toBe(2 * (M + N) + 4 * 8);
    expect(r.worst).toBeLessThan(0.25);
  });

  it.each([
    [0, 0],
    [M - 1, N - 1],
    [20, 4090],
    [5, 2222],
  ])('fails on one entry off by a hundredth of the RMS of C, at (%i, %i), naming its row and column', (i, j) => {
    const r = freivalds(problem(corrupted((c) => { c[i * N + j] += 0.01 * rms; })), 7);
    const where = r.failures.map((f) => f.what);
    expect(where).toContain(`row ${i} of C·v (round 0)`);
    expect(where).toContain(`column ${j} of uᵀ·C (round 0)`);
    expect(r.failed).toBe(2);
  });

  it('fails on one 14x32 tile left unwritten (zero) or stale (NaN)', () => {
    for (const fill of [0, NaN]) {
      const c = corrupted((c) => { for (let i = 14; i < 28; i++) c.fill(fill, i * N + 4096, i * N + 4128); });
      const r = freivalds(problem(c), 3);
      expect(r.failed).toBeGreaterThanOrEqual(14 + 32);
    }
  });

  it('fails when an operand was read transposed (a packing mix-up of a square block)', () => {
    // The same product with B's first 32×32 block transposed: every row and the first 32 columns move.
    const Bt = B.slice();
    for (let k = 0; k < 32; k++) for (let j = 0; j < 32; j++) Bt[k * N + j] = B[j * N + k];
    const c = new Float32Array(M * N);
    native.gemm({ transA: false, transB: false, M, N, K, alpha: 1.5, A, lda: K, B: Bt, ldb: N, beta: 0, C: c, ldc: N, backend: 'builtin' });
    expect(freivalds(problem(c), 5).failed).toBeGreaterThanOrEqual(M);
  });

  it('sampled entries are checked far tighter than the row sums: 1e-4 of the RMS is seen there', () => {
    const c = corrupted((c) => { c[14 * N + 4080] += 1e-4 * rms; });
    expect(freivalds(problem(c), 7).failures).toEqual([]);
    expect(entries(problem(c), [14], [4080]).failures.map((f) => f.what)).toEqual(['C[14, 4080]']);
  });
});
