// One GEMM call checked end to end: operands with leading dimensions wider than their widths (the
// padding of A and B is NaN, so a kernel that reads it puts NaN into C), C pre-filled with NaN when
// beta = 0, sentinels in C's padding and in guard cells before and after C, and the result checked
// against float64 by Freivalds plus exact sampled entries (test/freivalds.ts) at every sliver and
// panel edge the built-in GEMM's plan has for that shape.
import { expect } from 'vitest';
import { native, NativeGemmPlan } from '../lib/backends/cpu/binding';
import { describeReport, entries, Mat, prepare, Prepared, Report } from './freivalds';
import { randomArray } from './reference';

export interface GemmCase {
  ta: boolean;
  tb: boolean;
  M: number;
  N: number;
  K: number;
  alpha: number;
  beta: number;
  /** Extra columns of padding on each leading dimension (A, B, C). */
  pad: [number, number, number];
  seed: number;
}

export type Backend = 'builtin' | 'blas';

const SENTINEL = -777;
const GUARD = 16;

export function caseName(c: GemmCase): string {
  return `${c.ta ? 'T' : 'N'}${c.tb ? 'T' : 'N'} M=${c.M} N=${c.N} K=${c.K} alpha=${c.alpha} beta=${c.beta} pad=${c.pad.join('/')}`;
}

/** A small least-recently-used cache. */
function lru<T>(size: number): (key: string, make: () => T) => T {
  const m = new Map<string, T>();
  return (key, make) => {
    let v = m.get(key);
    if (v === undefined) {
      v = make();
      if (m.size >= size) m.delete(m.keys().next().value!);
    } else {
      m.delete(key);
    }
    m.set(key, v);
    return v;
  };
}

// The operands made last, by shape and seed: the named shapes reuse one W across the four transpose
// cases of a layer, and generating 50M floats costs more than the GEMM.
const operands = lru<Float32Array>(6);

/** rows × cols in a buffer with leading dimension ld: U(−1, 1) values, NaN padding. */
export function operand(rows: number, cols: number, ld: number, seed: number): Float32Array {
  return operands(`${rows}x${cols}/${ld}/${seed}`, () => {
    const a = randomArray(rows * ld, seed);
    if (ld > cols) for (let i = 0; i < rows; i++) a.fill(NaN, i * ld + cols, (i + 1) * ld);
    return a;
  });
}

/** The rows and columns where the plan's blocks and slivers begin and end, plus a few random ones. */
export function edges(c: GemmCase, plan: NativeGemmPlan, mr: number, nr: number): { rows: number[]; cols: number[] } {
  const around = (n: number, step: number, limit: number) => {
    const out = [0, 1, n - 2, n - 1];
    if (step > 0) {
      const stride = Math.max(step, Math.ceil(n / limit / step) * step);  // at most ~limit edges
      for (let e = step; e < n; e += stride) out.push(e - 1, e);
    }
    return out;
  };
  const rows = [...around(c.M, mr, 16), ...around(c.M, plan.MC, 4)];
  const cols = [...around(c.N, nr, 48), ...around(c.N, plan.NC, 8)];
  const rnd = randomArray(8, c.seed + 99);
  for (let t = 0; t < 4; t++) rows.push(Math.floor(((rnd[t] + 1) / 2) * c.M));
  for (let t = 4; t < 8; t++) cols.push(Math.floor(((rnd[t] + 1) / 2) * c.N));
  return { rows, cols };
}

export interface Outcome {
  report: Report;
  /** Entries of C's padding or guard cells that changed. */
  clobbered: string[];
  plan: NativeGemmPlan;
  message: string;
}

// The float64 reference of the last products checked: the transpose cases of one product (the same
// logical op(A), op(B) and C0, laid out differently) share it, so the passes over W are paid once.
const references = lru<Prepared>(2);

/** op(A) of a case as a logical M × K matrix (row-major), the same for either layout of A. */
function logicalA(c: GemmCase): Float32Array {
  return operand(c.M, c.K, c.K, c.seed + 1);
}

/** Runs one case on `backend` and checks it. */
export function runCase(c: GemmCase, backend: Backend): Outcome {
  const { ta, tb, M, N, K, alpha, beta, pad, seed } = c;
  const X = logicalA(c);
  // A holds op(A) = X, stored transposed when ta, with NaN in its padding.
  const lda = (ta ? M : K) + pad[0];
  const A = new Float32Array((ta ? K : M) * lda).fill(NaN);
  for (let i = 0; i < M; i++) for (let k = 0; k < K; k++) A[ta ? k * lda + i : i * lda + k] = X[i * K + k];
  const [bRows, bCols] = tb ? [N, K] : [K, N];
  const ldb = bCols + pad[1], ldc = N + pad[2];
  const B = operand(bRows, bCols, ldb, seed + 2);
  // C lives inside a larger buffer: guard cells before and after, sentinels in the row padding.
  const buf = new Float32Array(GUARD + M * ldc + GUARD).fill(SENTINEL);
  const C0 = beta === 0 ? null : operand(M, N, N, seed + 3);
  for (let i = 0; i < M; i++) {
    if (C0) buf.set(C0.subarray(i * N, (i + 1) * N), GUARD + i * ldc);
    else buf.fill(NaN, GUARD + i * ldc, GUARD + i * ldc + N);
  }
  const C = buf.subarray(GUARD, GUARD + (M > 0 ? (M - 1) * ldc + N : 0));
  native.gemm({ transA: ta, transB: tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, backend });

  const clobbered: string[] = [];
  const check = (at: number, what: string) => {
    if (!Object.is(buf[at], SENTINEL) && clobbered.length < 10) clobbered.push(`${what} = ${buf[at]}`);
  };
  for (let g = 0; g < GUARD; g++) check(g, `guard before C [${g - GUARD}]`);
  for (let i = 0; i < M; i++) for (let j = N; j < ldc; j++) check(GUARD + i * ldc + j, `C padding (${i}, ${j})`);
  for (let g = GUARD + M * ldc; g < buf.length; g++) check(g, `guard after C [+${g - GUARD - M * ldc}]`);

  let extra = null;
  if (C0) {
    const e = new Float64Array(M * N), scale = new Float64Array(M * N);
    for (let i = 0; i < M * N; i++) scale[i] = Math.abs((e[i] = beta * C0[i]));
    extra = { data: e, scale };
  }
  const opA: Mat = { data: X, rows: M, cols: K, ld: K, trans: false };
  const opB: Mat = { data: B, rows: K, cols: N, ld: ldb, trans: tb };
  const ref = references(`${M}x${N}x${K}/${alpha}/${beta}/${seed}/${tb}/${ldb}`, () => prepare(opA, opB, alpha, extra, seed));
  const report = ref.check(C, ldc);
  const plan = native.gemmPlan({ transA: ta, transB: tb, M, N, K, alpha });
  const table = native.builtinKernels();
  const k = plan.kernel >= 0 ? table.kernels[plan.kernel] : { mr: 8, nr: 16 };
  const e = edges(c, plan, k.mr, k.nr);
  entries({ A: opA, B: opB, alpha, extra, C, ldc }, e.rows, e.cols, report);
  const message = `${backend} ${caseName(c)} (${plan.path}${plan.kernel >= 0 ? ` ${k.mr}x${k.nr} MC=${plan.MC} NC=${plan.NC} KC=${plan.KC}` : ''}, ${plan.threads} thread(s)): ` +
    `${describeReport(report)}${clobbered.length ? `; wrote outside C: ${clobbered.join(', ')}` : ''}`;
  return { report, clobbered, plan, message };
}

/** Runs and checks one case, failing the test with the case, its plan and what went wrong. */
export function expectClean(c: GemmCase, backend: Backend, context = ''): Outcome {
  const o = runCase(c, backend);
  expect(o.report.failed === 0 && o.clobbered.length === 0, `${context}${o.message}`).toBe(true);
  return o;
}
