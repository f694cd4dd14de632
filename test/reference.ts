// Float64 references for the LoRA layer, written for clarity, not speed: the truth the kernels are
// checked against. Layouts as docs/ARCHITECTURE.md lists them: x (M, I), W (O, I), A (I, r), B (r, O).

export interface Problem {
  M: number; I: number; O: number; r: number;
  x: Float32Array; W: Float32Array; bias: Float32Array | null; A: Float32Array; B: Float32Array; scaling: number;
  /** Dropout mask (M, I), 1 = kept, and p; absent means no dropout. */
  mask?: Uint8Array; p?: number;
}

/** x̃ = x ⊙ mask / (1 − p), in float64. */
export function droppedInput(P: Problem): Float64Array {
  const out = Float64Array.from(P.x);
  if (P.mask) for (let e = 0; e < out.length; e++) out[e] = P.mask[e] ? out[e] / (1 - P.p!) : 0;
  return out;
}

export function refForward(P: Problem): { y: Float64Array; s: Float64Array } {
  const { M, I, O, r, x, W, bias, A, B, scaling } = P;
  const xd = droppedInput(P);
  const s = new Float64Array(M * r);
  for (let m = 0; m < M; m++)
    for (let k = 0; k < r; k++) {
      let acc = 0;
      for (let i = 0; i < I; i++) acc += xd[m * I + i] * A[i * r + k];
      s[m * r + k] = acc;
    }
  const y = new Float64Array(M * O);
  for (let m = 0; m < M; m++)
    for (let o = 0; o < O; o++) {
      let acc = bias ? bias[o] : 0;
      for (let i = 0; i < I; i++) acc += x[m * I + i] * W[o * I + i];
      let lora = 0;
      for (let k = 0; k < r; k++) lora += s[m * r + k] * B[k * O + o];
      y[m * O + o] = acc + scaling * lora;
    }
  return { y, s };
}

export function refBackward(P: Problem, dy: Float32Array): { dx: Float64Array; dA: Float64Array; dB: Float64Array } {
  const { M, I, O, r, W, A, B, scaling } = P;
  const xd = droppedInput(P);
  const { s } = refForward(P);
  const ds = new Float64Array(M * r);  // scaling·dy·Bᵀ
  for (let m = 0; m < M; m++)
    for (let k = 0; k < r; k++) {
      let acc = 0;
      for (let o = 0; o < O; o++) acc += dy[m * O + o] * B[k * O + o];
      ds[m * r + k] = scaling * acc;
    }
  const dB = new Float64Array(r * O);
  for (let k = 0; k < r; k++)
    for (let o = 0; o < O; o++) {
      let acc = 0;
      for (let m = 0; m < M; m++) acc += s[m * r + k] * dy[m * O + o];
      dB[k * O + o] = scaling * acc;
    }
  const dA = new Float64Array(I * r);
  for (let i = 0; i < I; i++)
    for (let k = 0; k < r; k++) {
      let acc = 0;
      for (let m = 0; m < M; m++) acc += xd[m * I + i] * ds[m * r + k];
      dA[i * r + k] = acc;
    }
  const dx = new Float64Array(M * I);
  for (let m = 0; m < M; m++)
    for (let i = 0; i < I; i++) {
      let base = 0;
      for (let o = 0; o < O; o++) base += dy[m * O + o] * W[o * I + i];
      let lora = 0;
      for (let k = 0; k < r; k++) lora += ds[m * r + k] * A[i * r + k];
      if (P.mask) lora = P.mask[m * I + i] ? lora / (1 - P.p!) : 0;
      dx[m * I + i] = base + lora;
    }
  return { dx, dA, dB };
}

/** ‖got − want‖ / ‖want‖ (Frobenius), with ‖want‖ floored at 1e-30; Infinity if got has a NaN. */
export function relErr(got: ArrayLike<number>, want: ArrayLike<number>): number {
  if (got.length !== want.length) throw new Error(`length ${got.length} != ${want.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < got.length; i++) {
    if (Number.isNaN(got[i])) return Infinity;
    num += (got[i] - want[i]) ** 2;
    den += want[i] ** 2;
  }
  return Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30);
}

/** Deterministic U(−1, 1) data (mulberry32), independent of the package's own generator. */
export function randomArray(n: number, seed: number, scale = 1): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

export function makeProblem(M: number, I: number, O: number, r: number, seed: number, withBias = true): Problem {
  return {
    M, I, O, r,
    x: randomArray(M * I, seed + 1),
    W: randomArray(O * I, seed + 2, 1 / Math.sqrt(I)),
    bias: withBias ? randomArray(O, seed + 3) : null,
    A: randomArray(I * r, seed + 4, 1 / Math.sqrt(I)),
    B: randomArray(r * O, seed + 5),  // nonzero, unlike the init, so the LoRA path is exercised
    scaling: 16 / r,
  };
}

const SIZES = [1, 2, 3, 7, 8, 15, 16, 17, 63, 64, 65, 127, 129, 1000];
const RANKS = [1, 2, 4, 8, 16, 64];

/**
 * The shape sweep (docs/ARCHITECTURE.md, tests), as a covering set: every size appears as M, as I and as O,
 * each paired with sizes taken around the list, ranks cycling through all six. The float64
 * reference is O(M·I·O) in JS, so combinations above 3e7 multiply-adds trade their partners for
 * small ones. Deterministic: the same list every run.
 */
export function shapeSweep(): Array<[number, number, number, number]> {
  const out: Array<[number, number, number, number]> = [];
  const seen = new Set<string>();
  let t = 0;
  for (let axis = 0; axis < 3; axis++)
    for (let j = 0; j < SIZES.length; j++) {
      const dims = [SIZES[(j + 5) % SIZES.length], SIZES[(j + 9) % SIZES.length], SIZES[(j + 3) % SIZES.length]];
      dims[axis] = SIZES[j];
      for (let k = 0; k < 3 && dims[0] * dims[1] * dims[2] > 3e7; k++) if (k !== axis && dims[k] >= 127) dims[k] = SIZES[(j + k) % 7];
      const r = RANKS[t++ % RANKS.length];
      const key = `${dims.join('x')}r${r}`;
      if (!seen.has(key)) {
        seen.add(key);
        out.push([dims[0], dims[1], dims[2], r]);
      }
    }
  return out;
}

/** erf in float64: 2/√π · e^(−x²) · Σ 2ⁿx^(2n+1)/(1·3·…·(2n+1)); all terms positive, so no cancellation. */
export function erf(x: number): number {
  if (Math.abs(x) > 6) return Math.sign(x);  // 1 − erf(6) < 3e-17
  let term = x, sum = x;
  for (let n = 1; n < 500 && Math.abs(term) > 1e-17 * Math.abs(sum); n++) {
    term *= (2 * x * x) / (2 * n + 1);
    sum += term;
  }
  return (2 / Math.sqrt(Math.PI)) * Math.exp(-x * x) * sum;
}

/** The standard normal CDF and density, and the exact (erf) GELU with its derivative. */
export const Phi = (x: number) => 0.5 * (1 + erf(x / Math.SQRT2));
export const phi = (x: number) => Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);
export const geluRef = (x: number) => x * Phi(x);
export const geluGradRef = (x: number) => Phi(x) + x * phi(x);
