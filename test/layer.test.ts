// LinearLoRA as a user sees it: initialisation, the layer against the float64 reference through the
// public API (rank-3 inputs, accumulation), merge/unmerge, dropout, parameter counts.
import { describe, expect, it } from 'vitest';
import { Linear, LinearLoRA, LoRA, tensor, Tensor } from '../lib/index';
import { makeProblem, randomArray, refBackward, refForward, relErr } from './reference';

function layerFor(P: ReturnType<typeof makeProblem>, opts: Record<string, unknown> = {}) {
  const base = new Linear(P.I, P.O, { weight: P.W, bias: P.bias ?? undefined });
  return new LinearLoRA(base, P.r, { alpha: P.scaling * P.r, A: P.A, B: P.B, ...opts });
}

describe('initialisation', () => {
  it('A is kaiming-uniform(a=√5) with fan_in = I, i.e. within ±1/√I and spread over it; B is zero', () => {
    const I = 400, O = 300, r = 8;
    const lora = new LoRA(I, O, r, { seed: 7 });
    const A = lora.A.dataSync();
    const bound = 1 / Math.sqrt(I);
    expect(lora.A.shape).toEqual([I, r]);
    expect(lora.B.shape).toEqual([r, O]);
    expect(A.every((v) => Math.abs(v) <= bound)).toBe(true);
    expect(Math.max(...A)).toBeGreaterThan(0.95 * bound);
    expect(Math.min(...A)).toBeLessThan(-0.95 * bound);
    const mean = A.reduce((a, v) => a + v, 0) / A.length;
    const variance = A.reduce((a, v) => a + (v - mean) ** 2, 0) / A.length;
    expect(Math.abs(variance - bound ** 2 / 3)).toBeLessThan(0.1 * bound ** 2 / 3);  // U(±b) has variance b²/3
    expect(lora.B.dataSync().every((v) => v === 0)).toBe(true);
  });

  it('the same seed gives the same A; another seed another A', () => {
    const a = new LoRA(50, 20, 4, { seed: 1 }).A.dataSync();
    expect(new LoRA(50, 20, 4, { seed: 1 }).A.dataSync()).toEqual(a);
    expect(new LoRA(50, 20, 4, { seed: 2 }).A.dataSync()).not.toEqual(a);
  });

  it('scaling is alpha / r, alpha / √r with rsLoRA, and 1 by default', () => {
    expect(new LoRA(10, 10, 4).scaling).toBe(1);
    expect(new LoRA(10, 10, 4, { alpha: 8 }).scaling).toBe(2);
    expect(new LoRA(10, 10, 4, { alpha: 8, rslora: true }).scaling).toBe(4);
  });

  it("a new LinearLoRA's output equals its Linear's, bit for bit", () => {
    const base = new Linear(37, 23, { seed: 3, bias: true });
    const layer = new LinearLoRA(base, 4, { seed: 4 });
    const x = tensor(randomArray(11 * 37, 9), [11, 37]);
    expect(layer.forward(x).dataSync()).toEqual(base.forward(x).dataSync());
  });

  it('counts parameters: the seed example, W 1000 × 10000 with r = 10, trains 110,000 of 10,000,000 (1.1 %)', () => {
    const layer = new LinearLoRA(new Linear(10000, 1000, { weight: new Float32Array(1000 * 10000) }), 10);
    expect(layer.numFrozen()).toBe(10_000_000);
    expect(layer.numTrainable()).toBe(110_000);
    expect(layer.parameters()).toEqual([layer.lora.A, layer.lora.B]);
    expect(layer.parameters().every((p) => p.grad instanceof Tensor)).toBe(true);
  });
});

describe('forward and backward through the layer', () => {
  for (const fused of [true, false]) {
    it(`${fused ? 'fused' : 'unfused'}: a rank-3 input (2, 5, I) flattens to 10 rows and matches float64`, () => {
      const P = makeProblem(10, 33, 17, 4, 21);
      const layer = layerFor(P, { fused });
      const y = layer.forward(tensor(P.x, [2, 5, 33]));
      expect(y.shape).toEqual([2, 5, 17]);
      expect(relErr(y.dataSync(), refForward(P).y)).toBeLessThanOrEqual(1e-5);
      const dy = randomArray(10 * 17, 8);
      const dx = layer.backward(tensor(dy, [2, 5, 17]))!;
      const g = refBackward(P, dy);
      expect(dx.shape).toEqual([2, 5, 33]);
      expect(relErr(dx.dataSync(), g.dx)).toBeLessThanOrEqual(1e-5);
      expect(relErr(layer.lora.A.grad!.dataSync(), g.dA)).toBeLessThanOrEqual(1e-5);
      expect(relErr(layer.lora.B.grad!.dataSync(), g.dB)).toBeLessThanOrEqual(1e-5);
    });
  }

  it('backward accumulates into the grads until zeroGrad', () => {
    const P = makeProblem(9, 12, 7, 3, 5);
    const layer = layerFor(P);
    const dy = randomArray(9 * 7, 2);
    layer.forward(P.x);
    layer.backward(dy);
    layer.backward(dy);
    const g = refBackward(P, dy);
    expect(relErr(layer.lora.A.grad!.dataSync(), g.dA.map((v) => 2 * v))).toBeLessThanOrEqual(1e-5);
    expect(relErr(layer.lora.B.grad!.dataSync(), g.dB.map((v) => 2 * v))).toBeLessThanOrEqual(1e-5);
    layer.zeroGrad();
    expect(layer.lora.A.grad!.dataSync().every((v) => v === 0)).toBe(true);
    expect(layer.lora.B.grad!.dataSync().every((v) => v === 0)).toBe(true);
  });

  it('inputGrad: false skips dx and still fills dA and dB', () => {
    const P = makeProblem(6, 8, 5, 2, 77);
    const layer = layerFor(P);
    layer.forward(P.x);
    const dy = randomArray(30, 3);
    expect(layer.backward(dy, { inputGrad: false })).toBeNull();
    expect(relErr(layer.lora.A.grad!.dataSync(), refBackward(P, dy).dA)).toBeLessThanOrEqual(1e-5);
  });

  it('writes into `out` when given, and M may change between calls', () => {
    const P = makeProblem(4, 6, 5, 2, 8);
    const layer = layerFor(P);
    const out = tensor(new Float32Array(20).fill(NaN), [4, 5]);
    expect(layer.forward(P.x, { out })).toBe(out);
    expect(relErr(out.dataSync(), refForward(P).y)).toBeLessThanOrEqual(1e-5);
    const Q = { ...P, M: 9, x: randomArray(9 * 6, 4) };
    expect(relErr(layer.forward(Q.x).dataSync(), refForward(Q).y)).toBeLessThanOrEqual(1e-5);
    expect(relErr(layer.forward(P.x).dataSync(), refForward(P).y)).toBeLessThanOrEqual(1e-5);
  });
});

describe('merge and unmerge', () => {
  it('merged forward equals the unmerged forward', () => {
    const P = makeProblem(13, 40, 30, 8, 12);
    const layer = layerFor(P);
    const before = layer.forward(P.x).dataSync();
    layer.merge();
    expect(layer.merged).toBe(true);
    expect(relErr(layer.forward(P.x).dataSync(), before)).toBeLessThanOrEqual(1e-5);
    layer.unmerge();
    expect(relErr(layer.forward(P.x).dataSync(), before)).toBeLessThanOrEqual(1e-6);
  });

  it('unmerge restores W bit for bit when the arithmetic is exact (dyadic values)', () => {
    const I = 16, O = 12, r = 4;
    // + 0 turns -0 into +0: IEEE gives -0 + 0 = +0, so a -0 weight could never come back bit for bit.
    const q = (n: number, seed: number) => randomArray(n, seed).map((v) => Math.round(v * 16) / 16 + 0);
    const W = q(O * I, 1);
    const layer = new LinearLoRA(new Linear(I, O, { weight: W.slice() }), r, { alpha: 2 * r, A: q(I * r, 2), B: q(r * O, 3) });
    layer.merge();
    expect(layer.base.weight.dataSync()).not.toEqual(W);
    layer.unmerge();
    expect(layer.base.weight.dataSync()).toEqual(W);
  });

  it('merge and unmerge are no-ops when already in that state; backward on a merged layer is refused', () => {
    const P = makeProblem(3, 5, 4, 2, 1);
    const layer = layerFor(P);
    layer.merge();
    const merged = layer.base.weight.dataSync();
    layer.merge();
    expect(layer.base.weight.dataSync()).toEqual(merged);
    layer.forward(P.x);
    expect(() => layer.backward(randomArray(12, 1))).toThrow(/merged/);
    layer.unmerge();
    layer.unmerge();
    expect(relErr(layer.base.weight.dataSync(), P.W)).toBeLessThanOrEqual(1e-6);
  });
});

describe('dropout', () => {
  it('p = 0 gives exactly the output and gradients of no dropout', () => {
    const P = makeProblem(20, 30, 10, 4, 3);
    const a = layerFor(P, { dropout: 0, seed: 1 });
    const b = layerFor(P, { seed: 1 });
    const dy = randomArray(200, 4);
    expect(a.forward(P.x).dataSync()).toEqual(b.forward(P.x).dataSync());
    expect(a.backward(dy)!.dataSync()).toEqual(b.backward(dy)!.dataSync());
    expect(a.lora.A.grad!.dataSync()).toEqual(b.lora.A.grad!.dataSync());
    expect(a.lastDropoutMask).toBeNull();
  });

  it("backward uses the mask of the layer's last forward, and each forward draws a new one", () => {
    const P = makeProblem(20, 30, 10, 4, 3);
    const layer = layerFor(P, { dropout: 0.3, seed: 5 });
    layer.forward(P.x);
    const first = layer.lastDropoutMask!.slice();
    const y = layer.forward(P.x).dataSync();
    const mask = layer.lastDropoutMask!.slice();
    expect(mask).not.toEqual(first);
    const Pm = { ...P, mask, p: 0.3 };
    expect(relErr(y, refForward(Pm).y)).toBeLessThanOrEqual(1e-5);
    const dy = randomArray(200, 6);
    const dx = layer.backward(dy)!.dataSync();
    const g = refBackward(Pm, dy);
    expect(relErr(dx, g.dx)).toBeLessThanOrEqual(1e-5);
    expect(relErr(layer.lora.A.grad!.dataSync(), g.dA)).toBeLessThanOrEqual(1e-5);
    expect(relErr(layer.lora.B.grad!.dataSync(), g.dB)).toBeLessThanOrEqual(1e-5);
  });

  it('eval() turns dropout off; the same seed replays the same masks', () => {
    const P = makeProblem(8, 10, 6, 2, 4);
    const a = layerFor(P, { dropout: 0.5, seed: 9 });
    const b = layerFor(P, { dropout: 0.5, seed: 9 });
    expect(a.forward(P.x).dataSync()).toEqual(b.forward(P.x).dataSync());
    a.eval();
    expect(relErr(a.forward(P.x).dataSync(), refForward(P).y)).toBeLessThanOrEqual(1e-5);
    expect(a.lastDropoutMask).toBeNull();
  });
});
