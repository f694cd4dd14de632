// The GEMM every kernel is built from, on both backends in one process (the `backend` argument picks
// the built-in kernel or the loaded BLAS): all four transpose cases, awkward sizes, leading
// dimensions larger than widths, alpha/beta, and beta = 0 overwriting a NaN-filled C.
import { describe, expect, it } from 'vitest';
import { native } from '../lib/backends/cpu/binding';
import { backendInfo } from '../lib/index';
import { randomArray, relErr } from './reference';

type Case = [ta: boolean, tb: boolean, M: number, N: number, K: number, alpha: number, beta: number];

function refGemm(ta: boolean, tb: boolean, M: number, N: number, K: number, alpha: number, A: Float32Array, lda: number,
  B: Float32Array, ldb: number, beta: number, C: Float32Array, ldc: number): Float64Array {
  const out = new Float64Array(M * N);
  for (let i = 0; i < M; i++)
    for (let j = 0; j < N; j++) {
      let acc = 0;
      for (let k = 0; k < K; k++) acc += (ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]);
      out[i * N + j] = alpha * acc + (beta === 0 ? 0 : beta * C[i * ldc + j]);
    }
  return out;
}

const SIZES = [1, 2, 3, 7, 8, 15, 16, 17, 63, 64, 65, 127, 129, 1000];
const cases: Case[] = [];
let t = 0;
for (const ta of [false, true])
  for (const tb of [false, true])
    for (let j = 0; j < SIZES.length; j++) {
      const M = SIZES[j], N = SIZES[(j + 4) % SIZES.length], K = SIZES[(j + 9) % SIZES.length];
      const [alpha, beta] = [[1, 0], [1, 1], [-0.5, 2], [2, -1]][t++ % 4];
      cases.push([ta, tb, M, N, K, alpha, beta]);
    }
cases.push([false, true, 1, 4096, 4096, 1, 0], [true, false, 16, 2048, 64, 1, 1], [false, false, 0, 5, 3, 1, 0], [false, false, 3, 5, 0, 1, 0.5]);

const backends = backendInfo().cpu.blas === 'builtin' ? (['builtin'] as const) : (['builtin', 'blas'] as const);

describe.each(backends)('gemm on %s', (backend) => {
  it.each(cases)('transA=%s transB=%s M=%i N=%i K=%i alpha=%f beta=%f', (ta, tb, M, N, K, alpha, beta) => {
    // Leading dimensions 3 wider than the stored width: the padding must be neither read nor written.
    const lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 3, ldc = N + 3;
    const A = randomArray((ta ? K : M) * lda, M + 1);
    const B = randomArray((tb ? N : K) * ldb, N + 2);
    const C = beta === 0 ? new Float32Array(M * ldc).fill(NaN) : randomArray(M * ldc, K + 3);
    for (let i = 0; i < M; i++) C.fill(-777, i * ldc + N, (i + 1) * ldc);  // sentinels in C's padding
    const want = refGemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    native.gemm({ transA: ta, transB: tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, backend });
    const got = new Float32Array(M * N);
    for (let i = 0; i < M; i++) got.set(C.subarray(i * ldc, i * ldc + N), i * N);
    expect(relErr(got, want)).toBeLessThanOrEqual(1e-5);
    for (let i = 0; i < M; i++) for (let j = N; j < ldc; j++) expect(C[i * ldc + j]).toBe(-777);
  });
});

it('the built-in GEMM reports a micro-kernel for this CPU', () => {
  expect(['avx512', 'avx2', 'generic']).toContain(backendInfo().cpu.builtinKernel);
});
