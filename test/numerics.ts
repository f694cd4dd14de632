// The kernel numerics suite, run once per GEMM backend (numerics-*.test.ts pick it with
// FUSED_LORA_BLAS): forward and backward, fused, unfused and async, against the float64 reference
// over the shape sweep, with every output pre-filled with NaN so an unwritten element fails.
import { describe, expect, it } from 'vitest';
import { native } from '../lib/backends/cpu/binding';
import { backendInfo } from '../lib/index';
import { makeProblem, Problem, refBackward, refForward, relErr, shapeSweep, randomArray } from './reference';

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
  });
}
