// The LoRA kernels (native.loraForward / loraBackward, and their async twins) at real model widths,
// every output checked against float64: y, s, dx, ds, dA, dB, by Freivalds plus exact sampled
// entries (test/freivalds.ts), outputs pre-filled with NaN. A float64 reference of the whole layer
// is O(M·I·O) in JS, minutes at LLaMA widths; here only the rank-r terms (O(M·r·(I + O))) are
// formed in float64, and the frozen product x·Wᵀ / dy·W is checked through W·v and uᵀ·x.
//
// Backward takes a canonical s (float64 s rounded once) rather than each forward's own, so its
// references are shared by every variant; dA is checked against the ds the kernel wrote (its own
// input), and dx and y against float64 ds and s with the float32 depth of those in the tolerance.
import { expect } from 'vitest';
import { native } from '../lib/backends/cpu/binding';
import { describeReport, entries, Extra, Mat, prepare, Prepared, Report } from './freivalds';
import { Rng } from './fixtures/mutate';
import { randomArray } from './reference';

export interface Layer {
  I: number; O: number; r: number;
  /** W (O, I) as nn.Linear stores it, or (I, O) with fanInFanOut (tf.layers.dense's kernel). */
  W: Float32Array; fanInFanOut: boolean; bias: Float32Array | null; A: Float32Array; B: Float32Array; scaling: number;
}

export interface Variant {
  fused: boolean;
  async: boolean;
}

export const VARIANTS: Variant[] = [
  { fused: true, async: false },
  { fused: false, async: false },
  { fused: true, async: true },
  { fused: false, async: true },
];

const layers = new Map<string, Layer>();

/** A layer with nonzero B (so the LoRA path counts), scaling 16/r; the last few are kept. */
export function makeLayer(I: number, O: number, r: number, seed: number, bias = true, fanInFanOut = false): Layer {
  const key = `${I}/${O}/${r}/${seed}/${bias}/${fanInFanOut}`;
  let l = layers.get(key);
  if (!l) {
    if (layers.size >= 2) layers.delete(layers.keys().next().value!);
    l = {
      I, O, r, scaling: 16 / r, fanInFanOut,
      W: randomArray(O * I, seed + 2, 1 / Math.sqrt(I)),
      bias: bias ? randomArray(O, seed + 3) : null,
      A: randomArray(I * r, seed + 4, 1 / Math.sqrt(I)),
      B: randomArray(r * O, seed + 5),
    };
    layers.set(key, l);
  }
  return l;
}

const view = (data: Float32Array | Float64Array, rows: number, cols: number, trans = false): Mat =>
  ({ data, rows, cols, ld: trans ? rows : cols, trans });

/** Rows and columns to check exactly: the ends, the sliver and panel edges of every kernel, and random ones. */
function sample(n: number, seed: number): number[] {
  const out = [0, 1, n - 2, n - 1, 3, 4, 5, 7, 8, 13, 14, 15, 16, 23, 24, 31, 32, 47, 48, 4079, 4080, 4081, 4095, 4096, 4097, 8159, 8160, 8191, 8192, 8193];
  const rnd = randomArray(6, seed);
  for (const v of rnd) out.push(Math.floor(((v + 1) / 2) * n));
  return out.filter((v) => v >= 0 && v < n);
}

interface Refs {
  xd: Float32Array | Float64Array;  // x̃ (M, I)
  sCanon: Float32Array;             // backward's input s
  y: Prepared; yEntries: (y: Float32Array, r: Report) => void;
  s: Prepared;
  ds: Prepared;
  dx: Prepared; dxEntries: (dx: Float32Array, r: Report) => void;
  dB: Prepared; dBEntries: (dB: Float32Array, r: Report) => void;
}

/** The float64 references of one (layer, batch), shared by every variant. */
function references(L: Layer, M: number, x: Float32Array, dy: Float32Array, mask: Uint8Array | null, p: number, seed: number): Refs {
  const { I, O, r, W, A, B, bias, scaling } = L;
  let xd: Float32Array | Float64Array = x;
  if (mask) {
    xd = new Float64Array(M * I);
    for (let e = 0; e < M * I; e++) xd[e] = mask[e] ? x[e] / (1 - p) : 0;
  }
  // s = x̃·A, ds = scaling·dy·Bᵀ (M, r), in float64.
  const sRef = new Float64Array(M * r), dsRef = new Float64Array(M * r);
  for (let m = 0; m < M; m++) {
    for (let i = 0; i < I; i++) {
      const xv = xd[m * I + i];
      for (let k = 0; k < r; k++) sRef[m * r + k] += xv * A[i * r + k];
    }
    for (let k = 0; k < r; k++) {
      let acc = 0;
      for (let o = 0; o < O; o++) acc += dy[m * O + o] * B[k * O + o];
      dsRef[m * r + k] = scaling * acc;
    }
  }
  // The rank-r terms of y and dx: bias + scaling·s·B (M, O) and (ds·Aᵀ) ⊙ mask / (1 − p) (M, I),
  // with the scale of their float32 error: the kernels form s and ds over I and O terms first, then
  // r products of them, so |terms| · √(I + r) (and √(O + r)).
  const yE: Extra = { data: new Float64Array(M * O), scale: new Float64Array(M * O) };
  const dxE: Extra = { data: new Float64Array(M * I), scale: new Float64Array(M * I) };
  const yDepth = Math.sqrt(I + r), dxDepth = Math.sqrt(O + r);
  for (let m = 0; m < M; m++) {
    for (let o = 0; o < O; o++) {
      let acc = 0, mag = 0;
      for (let k = 0; k < r; k++) {
        const t = sRef[m * r + k] * B[k * O + o];
        acc += t;
        mag += Math.abs(t);
      }
      const b0 = bias ? bias[o] : 0;
      yE.data[m * O + o] = b0 + scaling * acc;
      yE.scale[m * O + o] = Math.abs(b0) + yDepth * Math.abs(scaling) * mag;
    }
    for (let i = 0; i < I; i++) {
      let acc = 0, mag = 0;
      for (let k = 0; k < r; k++) {
        const t = dsRef[m * r + k] * A[i * r + k];
        acc += t;
        mag += Math.abs(t);
      }
      const keep = mask ? (mask[m * I + i] ? 1 / (1 - p) : 0) : 1;
      dxE.data[m * I + i] = keep * acc;
      dxE.scale[m * I + i] = dxDepth * keep * mag;
    }
  }
  // y = x·op(W) and dx = dy·op(W)ᵀ, op(W) (I, O) being Wᵀ of W (O, I), or W itself stored (I, O).
  const io = L.fanInFanOut;
  const xv = view(x, M, I), Wt = io ? view(W, I, O) : view(W, I, O, true), dyv = view(dy, M, O), Wv = io ? view(W, O, I, true) : view(W, O, I);
  const rows = sample(M, seed), colsO = sample(O, seed + 1), colsI = sample(I, seed + 2);
  const sCanon = Float32Array.from(sRef);
  return {
    xd, sCanon,
    y: prepare(xv, Wt, 1, yE, seed),
    yEntries: (y, rep) => entries({ A: xv, B: Wt, alpha: 1, extra: yE, C: y, ldc: O }, rows, colsO, rep),
    s: prepare(view(xd, M, I), view(A, I, r), 1, null, seed + 3),
    ds: prepare(dyv, view(B, O, r, true), scaling, null, seed + 4),
    dx: prepare(dyv, Wv, 1, dxE, seed + 5),
    dxEntries: (dx, rep) => entries({ A: dyv, B: Wv, alpha: 1, extra: dxE, C: dx, ldc: I }, rows, colsI, rep),
    dB: prepare(view(sCanon, r, M, true), dyv, scaling, null, seed + 6),
    dBEntries: (dB, rep) => entries({ A: view(sCanon, r, M, true), B: dyv, alpha: scaling, extra: null, C: dB, ldc: O }, Array.from({ length: r }, (_, k) => k), colsO, rep),
  };
}

const nan = (n: number) => new Float32Array(n).fill(NaN);

export interface LoraRun {
  M: number;
  x: Float32Array;
  dy: Float32Array;
  dropout?: { p: number; seed: number; step: number };
  seed: number;
}

/** Forward and backward of `L` on one batch in each variant, every output checked. */
export async function checkLora(L: Layer, run: LoraRun, variants: Variant[]): Promise<void> {
  const { M, x, dy, dropout, seed } = run;
  const { I, O, r } = L;
  let refs: Refs | null = null;
  let firstMask: Uint8Array | null = null;
  for (const v of variants) {
    const where = `M=${M} I=${I} O=${O} r=${r}${L.fanInFanOut ? ' W (I, O)' : ''}${dropout ? ` p=${dropout.p}` : ''} ${v.fused ? 'fused' : 'unfused'} ${v.async ? 'async' : 'sync'}`;
    const f = {
      M, I, O, r, x, W: L.W, fanInFanOut: L.fanInFanOut, bias: L.bias, A: L.A, B: L.B, scaling: L.scaling, fused: v.fused, s: nan(M * r), y: nan(M * O),
      ...(dropout ? { dropoutP: dropout.p, seed: dropout.seed, step: dropout.step, mask: new Uint8Array(M * I).fill(0xcd), xDrop: nan(M * I) } : {}),
    };
    if (v.async) await native.loraForwardAsync(f);
    else native.loraForward(f);
    const mask = dropout ? f.mask! : null;
    if (mask) {
      if (firstMask) expect(Buffer.compare(Buffer.from(mask), Buffer.from(firstMask)), `${where}: the mask of (seed, step)`).toBe(0);
      firstMask ??= mask.slice();
    }
    refs ??= references(L, M, x, dy, mask, dropout?.p ?? 0, seed);
    const out: Record<string, Report> = {};
    out.y = refs.y.check(f.y, O);
    refs.yEntries(f.y, out.y);
    out.s = refs.s.check(f.s, r);

    const b = {
      M, I, O, r, x, s: refs.sCanon, dy, W: L.W, fanInFanOut: L.fanInFanOut, A: L.A, B: L.B, scaling: L.scaling, fused: v.fused,
      ds: nan(M * r), dx: nan(M * I), dA: nan(I * r), dB: nan(r * O), accumulate: false,
      ...(dropout ? { dropoutP: dropout.p, mask: f.mask, xDrop: f.xDrop, loraDx: nan(M * I) } : {}),
    };
    if (v.async) await native.loraBackwardAsync(b);
    else native.loraBackward(b);
    out.ds = refs.ds.check(b.ds, r);
    out.dx = refs.dx.check(b.dx, I);
    refs.dxEntries(b.dx, out.dx);
    // dA = x̃ᵀ·ds with the ds this call wrote (its own float32 intermediate).
    const dAProblem = { A: view(refs.xd, I, M, true), B: view(b.ds, M, r), alpha: 1, extra: null, C: b.dA, ldc: r };
    out.dA = prepare(dAProblem.A, dAProblem.B, 1, null, seed + 7).check(b.dA, r);
    entries(dAProblem, sample(I, seed + 8), Array.from({ length: r }, (_, k) => k), out.dA);
    out.dB = refs.dB.check(b.dB, O);
    refs.dBEntries(b.dB, out.dB);
    const bad = Object.entries(out).filter(([, rep]) => rep.failed > 0);
    expect(bad.map(([name, rep]) => `${name}: ${describeReport(rep)}`), where).toEqual([]);
  }
}

// Batches are prefixes of one 64-row pool per layer, so every M of a sweep shares the float64
// W·v passes (freivalds.ts keeps op(B)·v per operand).
const pools = new Map<string, { x: Float32Array; dy: Float32Array }>();
export function batch(L: Layer, M: number, seed: number): LoraRun {
  const key = `${L.I}/${L.O}/${seed}`;
  let pool = pools.get(key);
  if (!pool || pool.x.length < M * L.I) {
    if (pools.size >= 2) pools.delete(pools.keys().next().value!);
    const rows = Math.max(64, M);
    pool = { x: randomArray(rows * L.I, seed + 11), dy: randomArray(rows * L.O, seed + 12) };
    pools.set(key, pool);
  }
  return { M, x: pool.x.subarray(0, M * L.I), dy: pool.dy.subarray(0, M * L.O), seed };
}

/** The README's example layer: Linear(1000, 10000) with a rank-10 adapter. */
export const README_LAYER = { I: 1000, O: 10000, r: 10 } as const;

/**
 * The LoRA kernels' own path boundaries, read from the addon: rows around the rank-r tile, the
 * rank-r product's streaming stores (C past its size threshold, with and without rows aligned to
 * a cache line), and dx's LoRA term through rank_r_product past its threshold.
 */
export function loraPathCases(): Array<{ name: string; M: number; I: number; O: number; r: number }> {
  const { rankRTileRows: mb, rankRTileCols: nb, rankRStreamBytes, dxRankRMinBytes, frozenBuiltinMaxRows: rows } = native.builtinKernels().lora;
  const streamRows = Math.ceil(rankRStreamBytes / (4 * 4096));
  const dxRows = Math.ceil(dxRankRMinBytes / (4 * 4096));
  return [
    { name: 'rank-r tile edges', M: mb + 1, I: 33, O: 3 * nb + 1, r: 3 },
    { name: 'rank-r tile edges', M: 2 * mb - 1, I: 17, O: nb - 1, r: 16 },
    { name: 'rank-r streaming stores, from their threshold', M: streamRows, I: 64, O: 4096, r: 16 },
    { name: 'rank-r streaming stores, just below', M: streamRows - 1, I: 64, O: 4096, r: 8 },
    { name: 'rank-r past the threshold, rows not line-aligned', M: streamRows + 1, I: 48, O: 4100, r: 3 },
    { name: "dx's LoRA term through rank_r_product, from its threshold", M: dxRows, I: 4096, O: 64, r: 16 },
    { name: "dx's LoRA term, just below", M: dxRows - 1, I: 4096, O: 48, r: 64 },
    // Beside a BLAS the frozen GEMMs run built-in up to this many rows, then on the BLAS.
    { name: 'frozen GEMMs on the built-in GEMM, its last row count', M: rows, I: 768, O: 3072, r: 16 },
    { name: 'frozen GEMMs on the BLAS, one row past', M: rows + 1, I: 3072, O: 768, r: 8 },
    { name: 'frozen GEMMs, a wide layer at the last row count', M: rows, I: 4096, O: 1100, r: 4 },
  ];
}

/** Random layers: M in 1..64, I and O log-uniform up to 20,000 (W kept under 2.5e7 elements), r in 1..64, some with dropout. */
export function randomLoraCases(count: number, seed: number): Array<{ M: number; I: number; O: number; r: number; p: number; variant: Variant }> {
  const rng = new Rng(seed);
  const logUniform = (max: number) => Math.max(1, Math.round(Math.exp(rng.next() * Math.log(max))));
  return Array.from({ length: count }, () => {
    const M = rng.chance(0.3) ? 1 + rng.int(8) : 1 + rng.int(64);
    let I = logUniform(20000), O = logUniform(20000);
    if (I * O > 2.5e7) {
      if (rng.chance(0.5)) I = Math.floor(2.5e7 / O);
      else O = Math.floor(2.5e7 / I);
    }
    return { M, I, O, r: 1 + rng.int(64), p: rng.chance(0.25) ? 0.2 : 0, variant: rng.pick(VARIANTS) };
  });
}
