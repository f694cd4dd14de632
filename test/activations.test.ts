// ReLU and the exact GELU: forward and backward against float64 references and central finite
// differences of the reference, any rank, the module contract a Sequential relies on, and errors.
//
// Tolerances: GELU runs in fp32 with erff/expf (a couple of ulps each), so 1e-6 relative to the
// reference's norm. The finite differences are on the float64 reference with h = 1e-5: truncation
// O(h²) ≈ 1e-10, rounding ≈ 1e-11, far below the kernel's fp32 rounding; 1e-5 leaves margin and
// still catches a wrong derivative (e.g. Φ without the x·φ term is off by ~30%).
import { describe, expect, it } from 'vitest';
import { native } from '../lib/backends/cpu/binding';
import { gelu, GELU, relu, ReLU, tensor } from '../lib/index';
import { erf, geluGradRef, geluRef, randomArray, relErr } from './reference';
import { expectCode } from './expect-code';


function finiteDiff(f: (x: number) => number, x: number, h = 1e-5): number {
  return (f(x + h) - f(x - h)) / (2 * h);
}

describe('the float64 erf used as reference', () => {
  it('matches known values', () => {
    expect(erf(0)).toBe(0);
    expect(Math.abs(erf(0.5) - 0.5204998778130465)).toBeLessThan(1e-15);
    expect(Math.abs(erf(1) - 0.8427007929497149)).toBeLessThan(1e-15);
    expect(Math.abs(erf(-2) + 0.9953222650189527)).toBeLessThan(1e-15);
    expect(Math.abs(1 - erf(4) - 1.541725790028002e-8)).toBeLessThan(1e-15);  // the tail, for negative GELU inputs
  });
});

describe('relu', () => {
  const x = Float32Array.from([...randomArray(20, 1, 3), 0, -0.5, 2, -1e-30]);

  it('forward is max(x, 0), exactly, and keeps a rank-3 shape', () => {
    const y = relu(tensor(x, [2, 3, 4]));
    expect(y.shape).toEqual([2, 3, 4]);
    expect(y.dataSync()).toEqual(Float32Array.from(x, (v) => Math.max(v, 0)));
  });

  it('backward passes dy where x > 0 and 0 elsewhere (0 at x = 0, as PyTorch), matching finite differences away from 0', () => {
    const m = new ReLU();
    m.forward(tensor(x, [4, 6]));
    const dy = randomArray(24, 2);
    const dx = m.backward(tensor(dy, [4, 6]))!;
    expect(dx.shape).toEqual([4, 6]);
    expect(dx.dataSync()).toEqual(Float32Array.from(x, (v, i) => (v > 0 ? dy[i] : 0)));
    const fd = Array.from(x, (v, i) => (Math.abs(v) > 1e-3 ? dy[i] * finiteDiff((t) => Math.max(t, 0), v) : dx.dataSync()[i]));
    expect(relErr(dx.dataSync(), fd)).toBeLessThan(1e-6);
  });

  it('NaN passes through forward (as torch.relu)', () => {
    expect(relu(Float32Array.from([NaN, -1])).dataSync()[0]).toBeNaN();
  });
});

describe('gelu (exact, erf form)', () => {
  const x = Float32Array.from([...randomArray(40, 3, 6), 0, 0.5, -0.5, 1, -1, 3, -3, 5, -5]);

  it('forward matches x·Φ(x) in float64, and is not the tanh approximation', () => {
    const y = gelu(tensor(x, [7, 7])).dataSync();
    const want = Array.from(x, geluRef);
    expect(relErr(y, want)).toBeLessThan(1e-6);
    for (let i = 0; i < x.length; i++) expect(Math.abs(y[i] - want[i])).toBeLessThan(1e-6 * Math.max(1, Math.abs(want[i])));
    // tanh form: 0.5x(1 + tanh(√(2/π)(x + 0.044715x³))) differs from the erf form by up to ~5e-4.
    const tanhForm = Array.from(x, (v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3))));
    expect(relErr(tanhForm, want)).toBeGreaterThan(1e-5);
  });

  it('backward is dy·(Φ(x) + x·φ(x)): matches float64 and central finite differences of the reference', () => {
    const m = new GELU();
    m.forward(tensor(x, [7, 7]));
    const dy = randomArray(49, 4);
    const dx = m.backward(tensor(dy, [7, 7]))!.dataSync();
    expect(relErr(dx, Array.from(x, (v, i) => dy[i] * geluGradRef(v)))).toBeLessThan(1e-6);
    expect(relErr(dx, Array.from(x, (v, i) => dy[i] * finiteDiff(geluRef, v)))).toBeLessThan(1e-5);
  });

  it('a large input (several thread chunks) keeps its rank-4 shape and matches float64', () => {
    const n = 2 * 3 * 100 * 101;
    const big = randomArray(n, 5, 4);
    const m = new GELU();
    const y = m.forward(tensor(big, [2, 3, 100, 101]));
    expect(y.shape).toEqual([2, 3, 100, 101]);
    expect(relErr(y.dataSync(), Array.from(big, geluRef))).toBeLessThan(1e-6);
    const dx = m.backward(new Float32Array(n).fill(1))!;
    expect(dx.shape).toEqual([2, 3, 100, 101]);
    expect(relErr(dx.dataSync(), Array.from(big, geluGradRef))).toBeLessThan(1e-6);
  });
});

describe('activation modules', () => {
  for (const [name, make] of [['ReLU', () => new ReLU()], ['GELU', () => new GELU()]] as const) {
    it(`${name}: no parameters; backward uses the last forward's input; inputGrad: false returns null`, () => {
      const m = make();
      expect(m.parameters()).toEqual([]);
      const a = randomArray(6, 7), b = randomArray(6, 8);
      const dy = randomArray(6, 9);
      m.forward(a);
      const fromA = m.backward(dy)!.dataSync();
      m.forward(b);
      const fromB = m.backward(dy)!.dataSync();
      const fresh = make();
      fresh.forward(b);
      expect(fromB).toEqual(fresh.backward(dy)!.dataSync());
      expect(fromB).not.toEqual(fromA);
      expect(m.backward(dy, { inputGrad: false })).toBeNull();
    });

    it(`${name}: backward before forward is ERR_ARGUMENT, a dy of another shape ERR_SHAPE`, () => {
      const m = make();
      expectCode(() => m.backward(new Float32Array(3)), 'ERR_ARGUMENT');
      m.forward(tensor(randomArray(6, 1), [2, 3]));
      expectCode(() => m.backward(tensor(randomArray(6, 2), [3, 2])), 'ERR_SHAPE');
      expectCode(() => m.backward(new Float32Array(5)), 'ERR_SHAPE');
      expectCode(() => m.backward(new Float32Array(6), { inputGrad: 'no' as unknown as boolean }), 'ERR_ARGUMENT');
      expectCode(() => m.forward([1, 2] as never), 'ERR_ARGUMENT');
      expectCode(() => m.forward(new Float64Array(2) as never), 'ERR_DTYPE');
    });
  }

  it('a disposed input is ERR_DISPOSED; the native layer rechecks buffer lengths', () => {
    const t = tensor([1, 2, 3]);
    t.dispose();
    expectCode(() => gelu(t), 'ERR_DISPOSED');
    expectCode(() => native.reluForward({ n: 4, x: new Float32Array(4), y: new Float32Array(3) }), 'ERR_SHAPE');
    expectCode(() => native.geluBackward({ n: 2, x: new Float32Array(2), dy: new Float32Array(2), dx: new Uint8Array(2) as never }), 'ERR_DTYPE');
  });
});
