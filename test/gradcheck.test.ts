// Finite-difference checks that dA, dB and dx are the derivatives of the layer's output:
// (1) against central differences of the float64 reference forward (precise: h = 1e-4 in float64);
// (2) against central differences of the kernel's own fp32 forward (y is linear in each of A, B and
//     x separately, so central differences have no truncation error: only fp32 rounding remains).
// The loss is L = Σ dy ⊙ y, so dL/dθ is what backward returns for upstream gradient dy.
import { describe, expect, it } from 'vitest';
import { native } from '../lib/backends/cpu/binding';
import { makeProblem, Problem, randomArray, refForward } from './reference';

type Param = 'A' | 'B' | 'x';

function lossRef(P: Problem, dy: Float32Array): number {
  const { y } = refForward(P);
  let L = 0;
  for (let i = 0; i < y.length; i++) L += dy[i] * y[i];
  return L;
}

function kernelGrads(P: Problem, dy: Float32Array, fused: boolean, drop?: { p: number; seed: number; step: number }) {
  const n = (k: number) => new Float32Array(k).fill(NaN);
  const dargs = drop ? { dropoutP: drop.p, seed: drop.seed, step: drop.step, mask: new Uint8Array(P.M * P.I), xDrop: n(P.M * P.I) } : {};
  const f = { M: P.M, I: P.I, O: P.O, r: P.r, x: P.x, W: P.W, bias: P.bias, A: P.A, B: P.B, scaling: P.scaling, fused, s: n(P.M * P.r), y: n(P.M * P.O), ...dargs };
  native.loraForward(f);
  const b = {
    M: P.M, I: P.I, O: P.O, r: P.r, x: P.x, s: f.s, dy, W: P.W, A: P.A, B: P.B, scaling: P.scaling, fused,
    ds: n(P.M * P.r), dx: n(P.M * P.I), dA: n(P.I * P.r), dB: n(P.r * P.O), accumulate: false,
    ...(drop ? { dropoutP: drop.p, mask: f.mask, xDrop: f.xDrop, loraDx: n(P.M * P.I) } : {}),
  };
  native.loraBackward(b);
  return { grads: { A: b.dA, B: b.dB, x: b.dx }, f };
}

function lossKernel(P: Problem, dy: Float32Array, drop?: { p: number; seed: number; step: number }): number {
  const { f } = kernelGrads(P, dy, true, drop);
  let L = 0;
  for (let i = 0; i < f.y.length; i++) L += dy[i] * f.y[i];
  return L;
}

describe.each([
  [5, 7, 4, 3],
  [17, 9, 13, 1],
  [3, 65, 2, 8],
])('finite differences, M=%i I=%i O=%i r=%i', (M, I, O, r) => {
  const P = makeProblem(M, I, O, r, 31 * M + I);
  const dy = randomArray(M * O, 17);

  for (const fused of [true, false]) {
    it(`${fused ? 'fused' : 'unfused'} gradients match central differences of the float64 forward`, () => {
      const { grads } = kernelGrads(P, dy, fused);
      for (const name of ['A', 'B', 'x'] as Param[]) {
        const theta = P[name];
        const step = Math.max(1, Math.floor(theta.length / 23));
        for (let e = 0; e < theta.length; e += step) {
          const h = 1e-3;
          const orig = theta[e];
          const plus = { ...P, [name]: Float32Array.from(theta) };
          // Float32 storage: perturb by an exactly representable step and divide by the step taken.
          plus[name][e] = orig + h;
          const hp = plus[name][e] - orig;
          const minus = { ...P, [name]: Float32Array.from(theta) };
          minus[name][e] = orig - hp;
          const fd = (lossRef(plus, dy) - lossRef(minus, dy)) / (2 * hp);
          expect(Math.abs(grads[name][e] - fd)).toBeLessThanOrEqual(1e-4 * Math.max(1, Math.abs(fd)));
        }
      }
    });
  }

  it('with dropout p = 0.4, gradients match central differences of the kernel forward under the same mask', () => {
    const drop = { p: 0.4, seed: 77, step: 5 };
    const { grads } = kernelGrads(P, dy, true, drop);
    for (const name of ['A', 'B', 'x'] as Param[]) {
      const theta = P[name];
      const step = Math.max(1, Math.floor(theta.length / 23));
      for (let e = 0; e < theta.length; e += step) {
        const h = 0.125;  // exact in fp32 for |θ| < 1; L is linear in θ, so no truncation error
        const plus = { ...P, [name]: Float32Array.from(theta) };
        plus[name][e] += h;
        const minus = { ...P, [name]: Float32Array.from(theta) };
        minus[name][e] -= h;
        const fd = (lossKernel(plus, dy, drop) - lossKernel(minus, dy, drop)) / (2 * h);
        expect(Math.abs(grads[name][e] - fd)).toBeLessThanOrEqual(2e-4 * Math.max(1, Math.abs(fd)));
      }
    }
  });
});
