// Checking a float32 product C ≈ α·op(A)·op(B) + E against float64 without forming the product.
// A full float64 GEMM at M = 64, N = K = 20,000 is ~10^10 multiply-adds, far too slow in JS, so:
//
//  - Freivalds, both sides: for random sign vectors v (length N) and u (length M), C·v is compared
//    with α·op(A)·(op(B)·v) + E·v, and uᵀ·C with α·(uᵀ·op(A))·op(B) + uᵀ·E, all in float64, in
//    O(MK + KN + MN). A wrong entry (i, j) moves (C·v)_i and (uᵀ·C)_j by its whole error, since
//    |v_j| = |u_i| = 1, so every entry is seen; several wrong entries can cancel in one row's sum
//    only for a sign pattern of probability <= 1/2, and never in the row and the column at once.
//  - exact float64 values of sampled entries (every sliver and panel edge the caller names), each
//    against its own, much tighter, bound.
//
// Tolerances come from the norms. Rounding errors of a K-term float32 dot product behave like a
// random walk: about u·√K·σ with σ = √(Σ_k a_ik²·b_kj²) and u = 2^-24. Summed over a row with random
// signs they add in quadrature, so row i of C·v gets c·u·(√K·|α|·√(Σ_j σ_ij²) + ‖S_i‖ + ‖C_i‖): the
// last term is the final rounding of each entry, S the error scale of E's own float32 computation
// (the magnitude of its terms times the root of its depth). Σ_j σ_ij² = ((op(A)∘op(A))·(op(B)∘op(B))·1)_i
// costs one more pass. c = 16
// keeps a correct product many standard deviations inside (test/freivalds.test.ts measures the
// margin and shows one wrong entry of 1% of C's RMS, a zeroed tile or a NaN failing the check).
export const U = 2 ** -24;
export const C_TOL = 16;

/** op(X), rows × cols: element (i, k) is data[i·ld + k], or data[k·ld + i] when trans. */
export interface Mat {
  data: Float32Array | Float64Array;
  rows: number;
  cols: number;
  ld: number;
  trans: boolean;
}

/**
 * A float64 term added to the product, M × N row-major, and the scale of the error the kernel's
 * float32 computation of it may make (per entry, in units of u): the sum of its terms' magnitudes
 * times the root of their accumulation depth, not |E|, which may be a cancellation of larger terms.
 */
export interface Extra {
  data: Float64Array;
  scale: Float64Array;
}

export interface Problem {
  A: Mat;          // M × K
  B: Mat;          // K × N
  alpha: number;
  extra: Extra | null;
  C: Float32Array; // the result, M × N with leading dimension ldc
  ldc: number;
  /** Float32 accumulation the kernel did before this product (an operand it computed itself, as ds for dA). */
  depth?: number;
}

export interface Failure {
  what: string;
  err: number;
  tol: number;
}

export interface Report {
  /** The first 20 failures; `failed` counts them all. */
  failures: Failure[];
  failed: number;
  /** The largest err / tol over every comparison (NaN if any value was NaN): how close to failing. */
  worst: number;
  checked: number;
}

/** Deterministic ±1 vector (xorshift32). */
export function signs(n: number, seed: number): Float64Array {
  let x = (seed ^ 0x9e3779b9) >>> 0 || 1;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    out[i] = x & 1 ? 1 : -1;
  }
  return out;
}

/** y = op(X)·v and q = (op(X)∘op(X))·w, one pass over X. */
export function matVec(X: Mat, v: Float64Array, w: Float64Array): { y: Float64Array; q: Float64Array } {
  const { data, rows, cols, ld } = X;
  const y = new Float64Array(rows), q = new Float64Array(rows);
  if (!X.trans) {
    for (let i = 0; i < rows; i++) {
      let s = 0, s2 = 0;
      const o = i * ld;
      for (let k = 0; k < cols; k++) {
        const x = data[o + k];
        s += x * v[k];
        s2 += x * x * w[k];
      }
      y[i] = s;
      q[i] = s2;
    }
  } else {
    for (let k = 0; k < cols; k++) {
      const vk = v[k], wk = w[k], o = k * ld;
      for (let i = 0; i < rows; i++) {
        const x = data[o + i];
        y[i] += x * vk;
        q[i] += x * x * wk;
      }
    }
  }
  return { y, q };
}

/** y = uᵀ·op(X) and q = wᵀ·(op(X)∘op(X)), one pass over X. */
export function vecMat(u: Float64Array, w: Float64Array, X: Mat): { y: Float64Array; q: Float64Array } {
  const { data, rows, cols, ld } = X;
  const y = new Float64Array(cols), q = new Float64Array(cols);
  if (!X.trans) {
    for (let i = 0; i < rows; i++) {
      const ui = u[i], wi = w[i], o = i * ld;
      for (let k = 0; k < cols; k++) {
        const x = data[o + k];
        y[k] += ui * x;
        q[k] += wi * x * x;
      }
    }
  } else {
    for (let k = 0; k < cols; k++) {
      let s = 0, s2 = 0;
      const o = k * ld;
      for (let i = 0; i < rows; i++) {
        const x = data[o + i];
        s += u[i] * x;
        s2 += w[i] * x * x;
      }
      y[k] = s;
      q[k] = s2;
    }
  }
  return { y, q };
}

function compare(r: Report, what: string, got: number, want: number, tol: number): void {
  const err = Math.abs(got - want);
  r.checked++;
  const ratio = err / tol;
  r.worst = Number.isNaN(ratio) || Number.isNaN(r.worst) ? NaN : Math.max(r.worst, ratio);
  if (!(err <= tol)) {
    r.failed++;
    if (r.failures.length < 20) r.failures.push({ what, err, tol });
  }
}

/** What Freivalds compares C against, computed once from the operands: check() then costs O(MN). */
export interface Prepared {
  check(C: Float32Array, ldc: number, report?: Report): Report;
}

// op(B)·v for the sign vector of (seed, round): the same for every A, so it is kept per operand
// (the LoRA sweeps check many row counts against one W).
const bvCache = new WeakMap<Float32Array | Float64Array, Map<string, { y: Float64Array; q: Float64Array }>>();

function bTimesV(B: Mat, v: Float64Array, key: string): { y: Float64Array; q: Float64Array } {
  let m = bvCache.get(B.data);
  if (!m) bvCache.set(B.data, (m = new Map()));
  const k = `${B.rows}x${B.cols}/${B.ld}/${B.trans}/${key}`;
  let hit = m.get(k);
  if (!hit) m.set(k, (hit = matVec(B, v, new Float64Array(B.cols).fill(1))));
  return hit;
}

/**
 * Freivalds on rows (C·v) and columns (uᵀ·C) of C ≈ α·op(A)·op(B) + E, `rounds` sign vectors each.
 * The reference side is computed here; check() compares one C with it.
 */
export function prepare(A: Mat, B: Mat, alpha: number, extra: Extra | null, seed: number, rounds = 1): Prepared {
  if (A.cols !== B.rows) throw new Error(`op(A) is ${A.rows}x${A.cols} but op(B) is ${B.rows}x${B.cols}`);
  const M = A.rows, N = B.cols, K = A.cols;
  const a = Math.abs(alpha), sqK = Math.sqrt(K);
  const onesM = new Float64Array(M).fill(1);
  const sides: Array<{ v: Float64Array; u: Float64Array; rowWant: Float64Array; rowScale: Float64Array; colWant: Float64Array; colScale: Float64Array }> = [];
  for (let round = 0; round < rounds; round++) {
    // Rows: C·v against α·op(A)·(op(B)·v) + E·v, with Σ_j σ_ij² for the tolerance.
    const v = signs(N, seed * 31 + round);
    const Bv = bTimesV(B, v, `${N}/${seed * 31 + round}`);
    const Av = matVec(A, Bv.y, Bv.q);
    const rowWant = new Float64Array(M), rowScale = new Float64Array(M);
    for (let i = 0; i < M; i++) {
      let want = alpha * Av.y[i], en = 0;
      if (extra) {
        for (let j = 0; j < N; j++) {
          want += extra.data[i * N + j] * v[j];
          en += extra.scale[i * N + j] ** 2;
        }
      }
      rowWant[i] = want;
      rowScale[i] = sqK * a * Math.sqrt(Av.q[i]) + Math.sqrt(en);
    }
    // Columns: uᵀ·C against α·(uᵀ·op(A))·op(B) + uᵀ·E.
    const u = signs(M, seed * 37 + round + 1);
    const uA = vecMat(u, onesM, A);
    const uAB = vecMat(uA.y, uA.q, B);
    const colWant = new Float64Array(N), colScale = new Float64Array(N), en = new Float64Array(N);
    for (let j = 0; j < N; j++) colWant[j] = alpha * uAB.y[j];
    if (extra) {
      for (let i = 0; i < M; i++) {
        const ui = u[i], o = i * N;
        for (let j = 0; j < N; j++) {
          colWant[j] += ui * extra.data[o + j];
          en[j] += extra.scale[o + j] ** 2;
        }
      }
    }
    for (let j = 0; j < N; j++) colScale[j] = sqK * a * Math.sqrt(uAB.q[j]) + Math.sqrt(en[j]);
    sides.push({ v, u, rowWant, rowScale, colWant, colScale });
  }
  return {
    check(C: Float32Array, ldc: number, report?: Report): Report {
      const r = report ?? { failures: [], failed: 0, worst: 0, checked: 0 };
      sides.forEach(({ v, u, rowWant, rowScale, colWant, colScale }, round) => {
        const colGot = new Float64Array(N), colNorm = new Float64Array(N);
        for (let i = 0; i < M; i++) {
          let got = 0, cn = 0;
          const ui = u[i], o = i * ldc;
          for (let j = 0; j < N; j++) {
            const c = C[o + j];
            got += c * v[j];
            cn += c * c;
            colGot[j] += ui * c;
            colNorm[j] += c * c;
          }
          compare(r, `row ${i} of C·v (round ${round})`, got, rowWant[i], C_TOL * U * (rowScale[i] + Math.sqrt(cn)) + 1e-30);
        }
        for (let j = 0; j < N; j++) {
          compare(r, `column ${j} of uᵀ·C (round ${round})`, colGot[j], colWant[j], C_TOL * U * (colScale[j] + Math.sqrt(colNorm[j])) + 1e-30);
        }
      });
      return r;
    },
  };
}

/** prepare() and check() in one. */
export function freivalds(p: Problem, seed: number, rounds = 1, report?: Report): Report {
  return prepare(p.A, p.B, p.alpha, p.extra, seed, rounds).check(p.C, p.ldc, report);
}

const at = (X: Mat, i: number, k: number) => (X.trans ? X.data[k * X.ld + i] : X.data[i * X.ld + k]);

/** Exact float64 values of C[i, j] for every i in rows and j in cols, each against its own bound. */
export function entries(p: Problem, rows: number[], cols: number[], report?: Report): Report {
  const { A, B, alpha, extra, C, ldc } = p;
  const M = A.rows, N = B.cols, K = A.cols;
  const r = report ?? { failures: [], failed: 0, worst: 0, checked: 0 };
  const sqK = Math.sqrt(K + (p.depth ?? 0));
  const I = [...new Set(rows.filter((i) => i >= 0 && i < M))];
  const J = [...new Set(cols.filter((j) => j >= 0 && j < N))];
  for (const i of I) {
    const ai = new Float64Array(K);
    for (let k = 0; k < K; k++) ai[k] = at(A, i, k);
    for (const j of J) {
      let s = 0, s2 = 0;
      for (let k = 0; k < K; k++) {
        const t = ai[k] * at(B, k, j);
        s += t;
        s2 += t * t;
      }
      const e = extra ? extra.data[i * N + j] : 0, es = extra ? extra.scale[i * N + j] : 0;
      const c = C[i * ldc + j];
      const tol = C_TOL * U * (sqK * Math.abs(alpha) * Math.sqrt(s2) + es + Math.abs(c)) + 1e-30;
      compare(r, `C[${i}, ${j}]`, c, alpha * s + e, tol);
    }
  }
  return r;
}

/** "ok", or the first failures, for an assertion message. */
export function describeReport(r: Report): string {
  if (r.failed === 0) return `ok (${r.checked} comparisons, worst at ${r.worst.toFixed(3)} of its tolerance)`;
  return `${r.failed} of ${r.checked} comparisons failed: ` +
    r.failures.slice(0, 5).map((f) => `${f.what}: error ${f.err.toExponential(3)} > tolerance ${f.tol.toExponential(3)}`).join('; ');
}
