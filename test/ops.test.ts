// ops.* for frameworks with their own memory and layouts: W stored (I, O) as tf.layers.dense keeps
// its kernel, dropout on the LoRA path with the mask handed back for backward, and results written
// into the caller's tensors. Checked against the float64 reference, every output pre-filled with NaN.
import { describe, expect, it } from 'vitest';
import { Linear, LinearLoRA, ops, Tensor, tensor } from '../lib/index';
import { Random } from '../lib/random';
import { message } from './expect-code';
import { makeProblem, Problem, refBackward, refForward, relErr, shapeSweep } from './reference';

const TOL = 1e-5;
const nanTensor = (shape: number[]) => tensor(new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(NaN), shape);

/** W (O, I) → Wᵀ (I, O), the tf.layers.dense layout of the same weight. */
function transposed(W: Float32Array, O: number, I: number): Float32Array {
  const out = new Float32Array(I * O);
  for (let o = 0; o < O; o++) for (let i = 0; i < I; i++) out[i * O + o] = W[o * I + i];
  return out;
}

function operands(P: Problem) {
  const { M, I, O, r } = P;
  return {
    x: tensor(P.x, [M, I]), weight: tensor(transposed(P.W, O, I), [I, O]), A: tensor(P.A, [I, r]), B: tensor(P.B, [r, O]),
    bias: P.bias ? tensor(P.bias, [O]) : null, scaling: P.scaling, fanInFanOut: true,
  };
}

describe('ops with the weight stored (I, O) (fanInFanOut)', () => {
  // Every fourth shape of the sweep (it covers each size as M, I and O) and the frozen-size edges.
  const shapes = [...shapeSweep().filter((_, i) => i % 4 === 0), [1, 4096, 11, 8], [9, 33, 4097, 3]] as Array<[number, number, number, number]>;
  it.each(shapes)('M=%i I=%i O=%i r=%i: y, s, dx, dA, dB against float64, fused and unfused', (M, I, O, r) => {
    const P = makeProblem(M, I, O, r, 31 * M + I + O);
    const ref = refForward(P);
    const dy = Float32Array.from({ length: M * O }, (_, i) => Math.sin(i));
    const refB = refBackward(P, dy);
    for (const fused of [true, false]) {
      const out = { y: nanTensor([M, O]), s: nanTensor([M, r]) };
      const { y, s } = ops.loraForward({ ...operands(P), fused, out });
      expect(y).toBe(out.y);
      expect(relErr(y.dataSync(), ref.y), `y fused=${fused}`).toBeLessThan(TOL);
      expect(relErr(s.dataSync(), ref.s), `s fused=${fused}`).toBeLessThan(TOL);
      const { bias: _b, ...rest } = operands(P);
      const g = { dx: nanTensor([M, I]), dA: nanTensor([I, r]), dB: nanTensor([r, O]) };
      ops.loraBackward({ ...rest, s, dy: tensor(dy, [M, O]), fused, out: g });
      expect(relErr(g.dx.dataSync(), refB.dx), `dx fused=${fused}`).toBeLessThan(TOL);
      expect(relErr(g.dA.dataSync(), refB.dA), `dA fused=${fused}`).toBeLessThan(TOL);
      expect(relErr(g.dB.dataSync(), refB.dB), `dB fused=${fused}`).toBeLessThan(TOL);
    }
  });

  it('the (O, I) layout and the (I, O) one of the same weight give the same bits', () => {
    const P = makeProblem(17, 65, 129, 4, 5);
    const oi = ops.loraForward({ x: P.x, weight: P.W, bias: P.bias, A: P.A, B: P.B, scaling: P.scaling, M: 17, I: 65, O: 129, r: 4 });
    const io = ops.loraForward(operands(P));
    expect(relErr(io.y.dataSync(), oi.y.dataSync())).toBeLessThan(1e-6);
    expect(io.s.dataSync()).toEqual(oi.s.dataSync());
  });

  it('takes the shapes from the layout: an (O, I) weight where (I, O) is declared is ERR_SHAPE', () => {
    const P = makeProblem(3, 5, 7, 2, 9);
    expect(message(() => ops.loraForward({ ...operands(P), weight: tensor(P.W, [7, 5]) }))).toMatch(/^ERR_SHAPE ops\.loraForward: expected I = 5 \(as elsewhere\) for weight but received I = 7/);
  });
});

describe('ops with dropout on the LoRA path', () => {
  const M = 6, I = 40, O = 24, r = 4, p = 0.25;
  const P = makeProblem(M, I, O, r, 77);
  const dropout = { p, seed: 123, step: 4 };
  const withMask = (mask: Uint8Array): Problem => ({ ...P, mask, p });

  it('forward returns the mask it drew and x̃ = x ⊙ mask / (1 − p); y and s match float64 for that mask', () => {
    const { y, s, xDrop, mask } = ops.loraForward({ ...operands(P), dropout });
    expect(mask!.length).toBe(M * I);
    const kept = mask!.reduce((a, b) => a + b, 0);
    expect(kept).toBeGreaterThan(0.5 * M * I);
    expect(kept).toBeLessThan(M * I);
    const xd = xDrop!.dataSync();
    for (let e = 0; e < M * I; e++) {
      if (mask![e]) expect(Math.abs(xd[e] - P.x[e] / (1 - p))).toBeLessThan(1e-6 * Math.abs(P.x[e] / (1 - p)) + 1e-30);
      else expect(xd[e]).toBe(0);
    }
    const ref = refForward(withMask(mask!));
    expect(relErr(y.dataSync(), ref.y)).toBeLessThan(TOL);
    expect(relErr(s.dataSync(), ref.s)).toBeLessThan(TOL);
  });

  it("the mask is a function of (seed, step), LinearLoRA's for its kernels' seed: one generator", () => {
    const layer = new LinearLoRA(new Linear(I, O, { weight: P.W }), r, { dropout: p, seed: 5 });
    const masks = [0, 1].map(() => {
      layer.forward(tensor(P.x, [M, I]));
      return layer.lastDropoutMask!.slice();
    });
    // LinearLoRA draws A's seed, then its kernels' (lib/linear-lora.ts); each forward is a step.
    const rng = new Random(5);
    rng.nextSeed();
    const seed = rng.nextSeed();
    const ours = [0, 1].map((step) => ops.loraForward({ ...operands(P), dropout: { p, seed, step } }).mask!);
    expect(ours[0]).toEqual(masks[0]);
    expect(ours[1]).toEqual(masks[1]);
    expect(ours[1]).not.toEqual(ours[0]);
  });

  it('backward with the forward mask and x̃ matches float64, fused and unfused; without dx too', () => {
    const dy = Float32Array.from({ length: M * O }, (_, i) => Math.cos(i));
    for (const fused of [true, false]) {
      const f = ops.loraForward({ ...operands(P), dropout, fused });
      const ref = refBackward(withMask(f.mask!), dy);
      const { bias: _b, ...rest } = operands(P);
      const input = { ...rest, s: f.s, dy: tensor(dy, [M, O]), fused, dropout: { p, mask: f.mask!, xDrop: f.xDrop! } };
      const g = ops.loraBackward(input);
      expect(relErr(g.dx!.dataSync(), ref.dx), `dx fused=${fused}`).toBeLessThan(TOL);
      expect(relErr(g.dA.dataSync(), ref.dA), `dA fused=${fused}`).toBeLessThan(TOL);
      expect(relErr(g.dB.dataSync(), ref.dB), `dB fused=${fused}`).toBeLessThan(TOL);
      const noDx = ops.loraBackward({ ...input, inputGrad: false });
      expect(noDx.dx).toBeNull();
      expect(noDx.dA.dataSync()).toEqual(g.dA.dataSync());
    }
  });

  it('p = 0 is no dropout: no mask, no x̃, the plain result', () => {
    const plain = ops.loraForward(operands(P));
    const zero = ops.loraForward({ ...operands(P), dropout: { p: 0, seed: 1 } });
    expect(zero.mask).toBeNull();
    expect(zero.xDrop).toBeNull();
    expect(zero.y.dataSync()).toEqual(plain.y.dataSync());
  });

  it('refuses a bad dropout: p out of range, a mask of the wrong type or length, unknown keys', () => {
    const f = ops.loraForward({ ...operands(P), dropout });
    const { bias: _b, ...rest } = operands(P);
    const back = (d: object) => () => ops.loraBackward({ ...rest, s: f.s, dy: tensor(new Float32Array(M * O), [M, O]), dropout: d as never });
    expect(message(() => ops.loraForward({ ...operands(P), dropout: { p: 1, seed: 1 } }))).toMatch(/^ERR_ARGUMENT ops\.loraForward: expected a number in \[0, 1\)/);
    expect(message(() => ops.loraForward({ ...operands(P), dropout: { p, seed: -1 } }))).toMatch(/^ERR_ARGUMENT .*seed/);
    expect(message(() => ops.loraForward({ ...operands(P), dropout: { p, seed: 1, stpe: 2 } as never }))).toMatch(/for dropout\.stpe but received an unknown key \(did you mean 'step'\?\)/);
    expect(message(back({ p, mask: f.mask!.subarray(1), xDrop: f.xDrop }))).toMatch(/^ERR_SHAPE ops\.loraBackward: expected 240 elements \(M·I\) for dropout\.mask but received 239/);
    expect(message(back({ p, mask: new Float32Array(M * I), xDrop: f.xDrop }))).toMatch(/^ERR_DTYPE ops\.loraBackward: expected a Uint8Array for dropout\.mask/);
    expect(message(back({ p, mask: f.mask }))).toMatch(/^ERR_ARGUMENT ops\.loraBackward: expected a Tensor or Float32Array for xDrop but received undefined/);
  });
});

describe("ops writing into the caller's tensors (out)", () => {
  const M = 5, I = 9, O = 7, r = 3;
  const P = makeProblem(M, I, O, r, 3);

  it('returns the given tensors, written; the rest are new', () => {
    const y = nanTensor([M, O]);
    const res = ops.loraForward({ ...operands(P), out: { y } });
    expect(res.y).toBe(y);
    expect(relErr(y.dataSync(), refForward(P).y)).toBeLessThan(TOL);
    expect(res.s).toBeInstanceOf(Tensor);
  });

  it('refuses an output that shares memory with an input or another output, or of the wrong shape, and writes nothing', () => {
    const ins = operands(P);
    const y = nanTensor([M, O]);
    const inX = new Tensor(ins.x.buffer().subarray(0, M * r), [M, r]);
    expect(message(() => ops.loraForward({ ...ins, out: { y, s: inX } }))).toMatch(/^ERR_ARGUMENT ops\.loraForward: expected a tensor that does not share memory with x for out\.s/);
    expect(y.dataSync().every(Number.isNaN)).toBe(true);
    const ys = new Tensor(y.buffer().subarray(0, M * r), [M, r]);
    expect(message(() => ops.loraForward({ ...ins, out: { y, s: ys } }))).toMatch(/does not share memory with out\.y for out\.s/);
    expect(message(() => ops.loraForward({ ...ins, out: { y: nanTensor([O, M]) } }))).toMatch(/^ERR_SHAPE ops\.loraForward: expected shape \[5, 7\] for out\.y/);
    expect(message(() => ops.loraForward({ ...ins, out: { y: y.buffer() } as never }))).toMatch(/^ERR_ARGUMENT ops\.loraForward: expected a Tensor for out\.y/);
    expect(message(() => ops.loraForward({ ...ins, out: { xDrop: nanTensor([M, I]) } }))).toMatch(/expected no xDrop or mask without dropout for out/);
    expect(message(() => ops.loraForward({ ...ins, out: { z: y } as never }))).toMatch(/for out\.z but received an unknown key/);
    expect(message(() => ops.loraForward({ ...ins, dropout: { p: 0.5, seed: 1 }, out: { y, mask: new Uint8Array(M * I + 1) } }))).toMatch(/^ERR_SHAPE .*expected 45 elements \(M·I\) for out\.mask but received 46/);
    const yBytes = new Uint8Array(y.buffer().buffer, y.buffer().byteOffset, M * I);
    expect(message(() => ops.loraForward({ ...ins, dropout: { p: 0.5, seed: 1 }, out: { y, mask: yBytes } }))).toMatch(/expected memory apart from out\.y for out\.mask/);
    const { bias: _b, ...back } = ins;
    expect(message(() => ops.loraBackward({ ...back, s: nanTensor([M, r]), dy: nanTensor([M, O]), inputGrad: false, out: { dx: nanTensor([M, I]) } }))).toMatch(/expected no dx with inputGrad: false for out\.dx/);
  });

  it('a LinearLoRA step and ops with out give the same bits (one kernel)', () => {
    const layer = new LinearLoRA(new Linear(I, O, { weight: P.W, bias: P.bias! }), r, { alpha: P.scaling * r, A: P.A.slice(), B: P.B.slice() });
    const y = layer.forward(tensor(P.x, [M, I]));
    const out = { y: nanTensor([M, O]) };
    ops.loraForward({ x: tensor(P.x, [M, I]), weight: tensor(P.W, [O, I]), bias: tensor(P.bias!, [O]), A: tensor(P.A, [I, r]), B: tensor(P.B, [r, O]), scaling: P.scaling, out });
    expect(out.y.dataSync()).toEqual(y.dataSync());
  });
});
