// The kernel numerics suite, run once per GEMM backend (numerics-*.test.ts pick it with
// FUSED_LORA_BLAS): forward and backward, fused, unfused and async, against the float64 reference
// over the shape sweep, with every output pre-filled with NaN so an unwritten element fails.
import { describe, expect, it } from 'vitest';
import { native } from '../lib/backends/cpu/binding';
import { backendInfo, Linear, LinearLoRA, tensor } from '../lib/index';
import { makeProblem, Problem, refBackward, refForward, relErr, shapeSweep, randomArray } from './reference';
import { MODEL_LAYERS, MODEL_RANKS } from './gemm-shapes';
import { batch, checkLora, loraPathCases, makeLayer, README_LAYER, VARIANTS } from './lora-wide';

const TOL = 1e-5;
const nan = (n: number) => new Float32Array(n).fill(NaN);
const nanBytes = (n: number) => new Uint8Array(n).fill(0xcd);

// Extra shapes beyond the covering set: the big-by-big pairs it trades away for speed.
const SHAPES: Array<[number, number, number, number]> = [...shapeSweep(), [129, 1000, 127, 16], [1000, 127, 129, 64]];

function forwardArgs(P: Problem, fused: boolean) {
  const s = nan(P.M * P.r);
  const y = nan(P.M * P.O);
  return { M: P.M, I: P.I, O: P.O, r: P.r, x: P.x, W: P.W, bias: P.bias, A: P.A, B: P.B, scaling: P.scaling, fused, s, y };
}

function backwardArgs(P: Problem, s: Float32Array, dy: Float32Array, fused: boolean) {
  return {
    M: P.M, I: P.I, O: P.O, r: P.r, x: P.x, s, dy, W: P.W, A: P.A, B: P.B, scaling: P.scaling, fused,
    ds: nan(P.M * P.r), dx: nan(P.M * P.I), dA: nan(P.I * P.r), dB: nan(P.r * P.O), accumulate: false,
  };
}

export function defineNumerics(blas: 'builtin' | 'openblas'): void {
  describe(`numerics with the ${blas} GEMM`, () => {
    it(`runs on the ${blas} GEMM, as FUSED_LORA_BLAS asked`, () => {
      expect(backendInfo().cpu.blas).toBe(blas);
    });

    describe.each(SHAPES)('M=%i I=%i O=%i r=%i', (M, I, O, r) => {
      const P = makeProblem(M, I, O, r, M * 7919 + I * 104729 + O * 31 + r);
      const dy = randomArray(M * O, M + I + O + r);
      const ref = refForward(P);
      const grads = refBackward(P, dy);

      for (const fused of [true, false]) {
        it(`${fused ? 'fused' : 'unfused'} forward and backward match float64 within 1e-5`, () => {
          const f = forwardArgs(P, fused);
          native.loraForward(f);
          expect(relErr(f.y, ref.y)).toBeLessThanOrEqual(TOL);
          expect(relErr(f.s, ref.s)).toBeLessThanOrEqual(TOL);
          const b = backwardArgs(P, f.s, dy, fused);
          native.loraBackward(b);
          expect(relErr(b.dx, grads.dx)).toBeLessThanOrEqual(TOL);
          expect(relErr(b.dA, grads.dA)).toBeLessThanOrEqual(TOL);
          expect(relErr(b.dB, grads.dB)).toBeLessThanOrEqual(TOL);
        });
      }

      it('async forward and backward match float64 within 1e-5', async () => {
        const f = forwardArgs(P, true);
        await native.loraForwardAsync(f);
        expect(relErr(f.y, ref.y)).toBeLessThanOrEqual(TOL);
        const b = backwardArgs(P, f.s, dy, true);
        await native.loraBackwardAsync(b);
        expect(relErr(b.dx, grads.dx)).toBeLessThanOrEqual(TOL);
        expect(relErr(b.dA, grads.dA)).toBeLessThanOrEqual(TOL);
        expect(relErr(b.dB, grads.dB)).toBeLessThanOrEqual(TOL);
      });
    });

    describe.each([
      [7, 17, 15, 4, 0.1],
      [64, 65, 63, 8, 0.5],
      [129, 127, 64, 16, 0.9],
    ])('dropout M=%i I=%i O=%i r=%i p=%f', (M, I, O, r, p) => {
      for (const fused of [true, false]) {
        it(`${fused ? 'fused' : 'unfused'}: the forward's mask is the one backward applies`, () => {
          const P = makeProblem(M, I, O, r, 99 + M);
          const dy = randomArray(M * O, 5);
          const f = { ...forwardArgs(P, fused), dropoutP: p, seed: 12345, step: 3, mask: nanBytes(M * I), xDrop: nan(M * I) };
          native.loraForward(f);
          const kept = f.mask.reduce((a, v) => a + v, 0) / (M * I);
          expect(f.mask.every((v) => v === 0 || v === 1)).toBe(true);
          expect(Math.abs(kept - (1 - p))).toBeLessThan(4 * Math.sqrt(p * (1 - p) / (M * I)) + 1e-9);
          const Pm: Problem = { ...P, mask: f.mask, p };
          expect(relErr(f.y, refForward(Pm).y)).toBeLessThanOrEqual(TOL);
          const b = { ...backwardArgs(P, f.s, dy, fused), dropoutP: p, mask: f.mask, xDrop: f.xDrop, loraDx: nan(M * I) };
          native.loraBackward(b);
          const g = refBackward(Pm, dy);
          expect(relErr(b.dx, g.dx)).toBeLessThanOrEqual(TOL);
          expect(relErr(b.dA, g.dA)).toBeLessThanOrEqual(TOL);
          expect(relErr(b.dB, g.dB)).toBeLessThanOrEqual(TOL);
        });
      }
    });

    defineWideNumerics();
  });
}

// Real model widths (test/lora-wide.ts checks every output by Freivalds and sampled entries; a
// full float64 reference would take minutes here). The older sweep stopped at 1000, below the
// built-in GEMM's 4080-column panel, where the README's own layer overflowed its packing buffer.
const WIDE_ROWS = [1, 2, 4, 7, 8, 9, 16, 33, 64];

export function defineWideNumerics(): void {
  describe.each(MODEL_LAYERS.map((l, i) => [...l, i] as const))('%s (I=%i, O=%i)', (_name, I, O, layer) => {
    const shapes = [0, 1].map((q) => ({ M: WIDE_ROWS[(2 * layer + q) % WIDE_ROWS.length], r: MODEL_RANKS[(layer + 2 * q) % MODEL_RANKS.length] }));
    it.each(shapes)('M=$M r=$r: y, s, dx, ds, dA, dB, fused and unfused, sync and async', async ({ M, r }) => {
      const L = makeLayer(I, O, r, 3000 + layer, layer % 2 === 0);
      await checkLora(L, batch(L, M, 3000 + layer), VARIANTS);
    });
  });

  // Every row count from decode to 64, across the M <= 8 route to the built-in GEMM beside a BLAS:
  // the README's layer crashed or went wrong at M = 2..8 before its GEMM's panels were whole slivers.
  describe(`the README example layer (I=${README_LAYER.I}, O=${README_LAYER.O}, r=${README_LAYER.r}) at every M from 1 to 64`, () => {
    const L = () => makeLayer(README_LAYER.I, README_LAYER.O, README_LAYER.r, 4242);
    it.each(Array.from({ length: 64 }, (_, i) => i + 1))('M=%i', async (M) => {
      // Fused sync at every M; the unfused and async paths at every fourth.
      await checkLora(L(), batch(L(), M, 4242), M % 4 === 0 ? VARIANTS : VARIANTS.slice(0, 1));
    });
    it('with dropout (p = 0.1), M=5', async () => {
      await checkLora(L(), { ...batch(L(), 5, 4242), dropout: { p: 0.1, seed: 77, step: 2 } }, VARIANTS);
    });
  });

  it('through LinearLoRA (the README layer at M = 2, 5, 8, where it crashed): the same bits as the kernel checked above', () => {
    const { I, O, r } = README_LAYER;
    const L = makeLayer(I, O, r, 4242);
    for (const M of [2, 5, 8]) {
      const layer = new LinearLoRA(new Linear(I, O, { weight: L.W, bias: L.bias! }), r, { alpha: 16, A: L.A.slice(), B: L.B.slice() });
      const { x, dy } = batch(L, M, 4242);
      const y = layer.forward(tensor(x, [M, I]));
      const dx = layer.backward(tensor(dy, [M, O]))!;
      const f = { M, I, O, r, x, W: L.W, bias: L.bias, A: L.A, B: L.B, scaling: L.scaling, fused: true, s: nan(M * r), y: nan(M * O) };
      native.loraForward(f);
      const b = { M, I, O, r, x, s: f.s, dy, W: L.W, A: L.A, B: L.B, scaling: L.scaling, fused: true, ds: nan(M * r), dx: nan(M * I), dA: nan(I * r), dB: nan(r * O), accumulate: false };
      native.loraBackward(b);
      expect(y.dataSync()).toEqual(f.y);
      expect(dx.dataSync()).toEqual(b.dx);
      expect(layer.lora.A.grad!.dataSync()).toEqual(b.dA);
      expect(layer.lora.B.grad!.dataSync()).toEqual(b.dB);
      layer.dispose();
    }
  });

  // tf.layers.dense's layout: the frozen products become NN (y = x·W) and NT (dx = dy·Wᵀ) on the
  // same W, read in place; M = 1 takes the decode path's column slices of W.
  describe('W stored (I, O) (fanInFanOut), at real widths', () => {
    const cases = [
      { layer: 0, M: 1, r: 10 }, { layer: 0, M: 8, r: 10 }, { layer: 0, M: 9, r: 16 }, { layer: 1, M: 1, r: 8 },
      { layer: 2, M: 33, r: 3 }, { layer: 4, M: 2, r: 16 }, { layer: 5, M: 64, r: 1 }, { layer: 6, M: 7, r: 64 },
    ].map((c) => ({ ...c, name: MODEL_LAYERS[c.layer][0], I: MODEL_LAYERS[c.layer][1], O: MODEL_LAYERS[c.layer][2] }));
    it.each(cases)('$name (I=$I, O=$O) M=$M r=$r: every output, fused and unfused, sync and async', async ({ I, O, M, r, layer }) => {
      const L = makeLayer(I, O, r, 6000 + layer, layer % 2 === 1, true);
      await checkLora(L, batch(L, M, 6000 + layer), M > 16 ? VARIANTS.slice(0, 2) : VARIANTS);
    });
    it('with dropout (p = 0.2), the README layer at M = 5', async () => {
      const L = makeLayer(README_LAYER.I, README_LAYER.O, README_LAYER.r, 6100, true, true);
      await checkLora(L, { ...batch(L, 5, 6100), dropout: { p: 0.2, seed: 78, step: 3 } }, VARIANTS);
    });
  });

  describe("the LoRA kernels' path boundaries, from the addon's table", () => {
    it.each(loraPathCases())('$name: M=$M I=$I O=$O r=$r', async ({ M, I, O, r }) => {
      const L = makeLayer(I, O, r, 5000 + M + O, true);
      await checkLora(L, batch(L, M, 5000 + M), VARIANTS.slice(0, 3));
    });
  });
}
