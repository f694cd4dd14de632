// mseLoss and crossEntropyLoss: the loss against float64 references, the gradient against the
// reference's analytic gradient and against central finite differences of the reference, stability
// at logits of ±1000, and the argument checks.
//
// Finite differences are taken on the float64 reference (h = 1e-5): its truncation error is
// O(h²·f''') ≈ 1e-10 (and zero for the quadratic MSE) and its rounding error ≈ 1e-16 / h = 1e-11,
// so the difference quotient is the true derivative to ~1e-9. The kernel's gradient is fp32
// (relative rounding ~6e-8 per element), so 1e-5 (relative, over the whole gradient) passes a correct
// kernel with a wide margin and fails any wrong factor (a missing 1/M, 2, or a sign) by orders of
// magnitude. Differencing the kernel's own loss would not work as well for cross-entropy: its fp32
// exponentials make the loss noisy at ~1e-7, which h = 1e-3 would magnify to ~1e-4.
import { describe, expect, it } from 'vitest';
import { native } from '../lib/backends/cpu/binding';
import { crossEntropyLoss, mseLoss, Tensor, tensor, zeros } from '../lib/index';
import { randomArray, relErr } from './reference';
import { expectCode } from './expect-code';

function mseRef(y: ArrayLike<number>, t: ArrayLike<number>): { loss: number; grad: Float64Array } {
  const n = y.length;
  let s = 0;
  const grad = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    s += (y[i] - t[i]) ** 2;
    grad[i] = (2 * (y[i] - t[i])) / n;
  }
  return { loss: s / n, grad };
}

function ceRef(logits: ArrayLike<number>, labels: ArrayLike<number>, M: number, C: number): { loss: number; grad: Float64Array } {
  let loss = 0;
  const grad = new Float64Array(M * C);
  for (let m = 0; m < M; m++) {
    let mx = -Infinity;
    for (let c = 0; c < C; c++) mx = Math.max(mx, logits[m * C + c]);
    let s = 0;
    for (let c = 0; c < C; c++) s += Math.exp(logits[m * C + c] - mx);
    const lse = mx + Math.log(s);
    loss += lse - logits[m * C + labels[m]];
    for (let c = 0; c < C; c++) grad[m * C + c] = (Math.exp(logits[m * C + c] - lse) - (c === labels[m] ? 1 : 0)) / M;
  }
  return { loss: loss / M, grad };
}

/** Central differences of f at x, every coordinate, in float64. */
function finiteDiff(f: (x: Float64Array) => number, x: ArrayLike<number>, h = 1e-5): Float64Array {
  const xx = Float64Array.from(x);
  const out = new Float64Array(xx.length);
  for (let i = 0; i < xx.length; i++) {
    const v = xx[i];
    xx[i] = v + h;
    const up = f(xx);
    xx[i] = v - h;
    const down = f(xx);
    xx[i] = v;
    out[i] = (up - down) / (2 * h);
  }
  return out;
}

describe('mseLoss', () => {
  it('loss is the mean of squares (double), grad is 2(y − t)/n of y\'s shape, for a rank-3 input', () => {
    const y = tensor(randomArray(2 * 3 * 5, 1), [2, 3, 5]), t = tensor(randomArray(30, 2), [2, 3, 5]);
    const { loss, grad } = mseLoss(y, t);
    const ref = mseRef(y.dataSync(), t.dataSync());
    expect(Math.abs(loss - ref.loss) / ref.loss).toBeLessThan(1e-12);  // exact differences, double sums
    expect(grad.shape).toEqual([2, 3, 5]);
    expect(relErr(grad.dataSync(), ref.grad)).toBeLessThan(1e-6);
  });

  it('the gradient is the derivative of the loss (central differences of the float64 reference)', () => {
    const yv = randomArray(12, 3), tv = randomArray(12, 4);
    const fd = finiteDiff((yy) => mseRef(yy, tv).loss, yv);
    expect(relErr(mseLoss(tensor(yv, [3, 4]), tensor(tv, [3, 4])).grad.dataSync(), fd)).toBeLessThan(1e-5);
  });

  it('a large input (several reduction blocks) matches float64', () => {
    const n = 50_001;
    const y = randomArray(n, 5), t = randomArray(n, 6);
    const { loss, grad } = mseLoss(y, t);
    const ref = mseRef(y, t);
    expect(Math.abs(loss - ref.loss) / ref.loss).toBeLessThan(1e-12);
    expect(relErr(grad.dataSync(), ref.grad)).toBeLessThan(1e-6);
  });

  it('accepts Float32Arrays (taking the other side\'s shape) and writes into out', () => {
    const yv = randomArray(6, 7), tv = randomArray(6, 8);
    const a = mseLoss(tensor(yv, [2, 3]), tv);
    const b = mseLoss(yv, tensor(tv, [2, 3]));
    expect(b.grad.shape).toEqual([2, 3]);
    expect(b.grad.dataSync()).toEqual(a.grad.dataSync());
    const out = zeros([2, 3]);
    const c = mseLoss(tensor(yv, [2, 3]), tv, { out });
    expect(c.grad).toBe(out);
    expect(out.dataSync()).toEqual(a.grad.dataSync());
    expect(c.loss).toBe(a.loss);
  });

  it('shapes must match, be non-empty, and out must not overlap the inputs', () => {
    expectCode(() => mseLoss(tensor(randomArray(6, 1), [2, 3]), tensor(randomArray(6, 2), [3, 2])), 'ERR_SHAPE');
    expectCode(() => mseLoss(tensor(randomArray(6, 1), [2, 3]), randomArray(5, 2)), 'ERR_SHAPE');
    expectCode(() => mseLoss(new Float32Array(0), new Float32Array(0)), 'ERR_SHAPE');
    const y = tensor(randomArray(6, 1), [2, 3]);
    expectCode(() => mseLoss(y, randomArray(6, 2), { out: y }), 'ERR_ARGUMENT');
    expectCode(() => mseLoss(new Float64Array(3) as never, new Float32Array(3)), 'ERR_DTYPE');
  });
});

describe('crossEntropyLoss', () => {
  const M = 5, C = 7;
  const logits = randomArray(M * C, 11, 4);
  const labels = [3, 0, 6, 2, 3];

  it('loss and gradient match float64: mean over rows of −log softmax[label], (softmax − onehot)/M', () => {
    const { loss, grad } = crossEntropyLoss(tensor(logits, [M, C]), labels);
    const ref = ceRef(logits, labels, M, C);
    expect(Math.abs(loss - ref.loss) / ref.loss).toBeLessThan(1e-6);
    expect(grad.shape).toEqual([M, C]);
    expect(relErr(grad.dataSync(), ref.grad)).toBeLessThan(1e-6);
    // Each row of the gradient sums to 0 (softmax sums to 1).
    const g = grad.dataSync();
    for (let m = 0; m < M; m++) expect(Math.abs(g.slice(m * C, (m + 1) * C).reduce((a, v) => a + v, 0))).toBeLessThan(1e-7);
  });

  it('the gradient is the derivative of the loss (central differences of the float64 reference)', () => {
    const fd = finiteDiff((x) => ceRef(x, labels, M, C).loss, logits);
    expect(relErr(crossEntropyLoss(tensor(logits, [M, C]), labels).grad.dataSync(), fd)).toBeLessThan(1e-5);
  });

  it('labels as Int32Array, number[] or Tensor, and logits as a Float32Array (rows from the labels) agree', () => {
    const want = crossEntropyLoss(tensor(logits, [M, C]), Int32Array.from(labels));
    for (const got of [
      crossEntropyLoss(tensor(logits, [M, C]), labels),
      crossEntropyLoss(tensor(logits, [M, C]), tensor(labels, [M])),
      crossEntropyLoss(logits, labels),
    ]) {
      expect(got.loss).toBe(want.loss);
      expect(got.grad.shape).toEqual([M, C]);
      expect(got.grad.dataSync()).toEqual(want.grad.dataSync());
    }
  });

  it('logits of ±1000 give finite, exact results: no overflow, no NaN', () => {
    const x = [1000, -1000, 0, /**/ -1000, -1000, -1000, /**/ 1000, 1000, -1000, /**/ 1000, -1000, -1000];
    const lab = [0, 2, 1, 1];
    const { loss, grad } = crossEntropyLoss(tensor(x, [4, 3]), lab);
    // Row losses: ≈0 (the label has all the mass), log 3, log 2, and 2000 (the label is 2000 below the max).
    expect(Math.abs(loss - (0 + Math.log(3) + Math.log(2) + 2000) / 4)).toBeLessThan(1e-9);
    const g = grad.dataSync();
    expect(g.every(Number.isFinite)).toBe(true);
    const want = [0, 0, 0, 1 / 3, 1 / 3, -2 / 3, 1 / 2, -1 / 2, 0, 1, -1, 0].map((v) => v / 4);
    expect(relErr(g, want)).toBeLessThan(1e-6);
    expect(relErr(g, ceRef(x, lab, 4, 3).grad)).toBeLessThan(1e-6);
  });

  it('a large vocabulary (several reduction blocks) matches float64', () => {
    const rows = 3, V = 20_000;
    const x = randomArray(rows * V, 12, 10), lab = [5, 19_999, 12_345];
    const { loss, grad } = crossEntropyLoss(tensor(x, [rows, V]), lab);
    const ref = ceRef(x, lab, rows, V);
    expect(Math.abs(loss - ref.loss) / ref.loss).toBeLessThan(1e-6);
    expect(relErr(grad.dataSync(), ref.grad)).toBeLessThan(1e-6);
  });

  it('non-finite logits are computed through, as PyTorch does (a NaN logit gives a NaN loss)', () => {
    const x = Float32Array.from(logits);
    x[3] = NaN;
    expect(crossEntropyLoss(tensor(x, [M, C]), labels).loss).toBeNaN();
  });

  it('a label outside [0, C) or not an integer is ERR_ARGUMENT, also at the native layer', () => {
    for (const bad of [7, -1, 1.5, NaN]) {
      const lab = [...labels];
      lab[2] = bad;
      expectCode(() => crossEntropyLoss(tensor(logits, [M, C]), lab), 'ERR_ARGUMENT');
    }
    expectCode(() => crossEntropyLoss(tensor(logits, [M, C]), Int32Array.from([0, 0, 0, 0, 99])), 'ERR_ARGUMENT');
    const g = new Float32Array(M * C);
    expectCode(() => native.crossEntropyLoss({ M, C, logits, labels: Int32Array.from([0, 0, C, 0, 0]), grad: g }), 'ERR_ARGUMENT');
    expectCode(() => native.crossEntropyLoss({ M, C, logits, labels: Int32Array.from([0, 0, -1, 0, 0]), grad: g }), 'ERR_ARGUMENT');
  });

  it('shapes are checked: (M, C) logits, one label per row, no empty batch', () => {
    expectCode(() => crossEntropyLoss(tensor(logits, [M, C]), [0, 1]), 'ERR_SHAPE');
    expectCode(() => crossEntropyLoss(tensor(logits, [1, M, C]), labels), 'ERR_SHAPE');
    expectCode(() => crossEntropyLoss(logits.subarray(0, M * C - 1), labels), 'ERR_SHAPE');
    expectCode(() => crossEntropyLoss(tensor(new Float32Array(0), [0, C]), []), 'ERR_SHAPE');
    expectCode(() => crossEntropyLoss(tensor(logits, [M, C]), tensor(labels, [1, M])), 'ERR_SHAPE');
    expectCode(() => crossEntropyLoss(tensor(logits, [M, C]), new Float32Array(labels) as never), 'ERR_DTYPE');
    expectCode(() => crossEntropyLoss(tensor(logits, [M, C]), 'cat' as never), 'ERR_ARGUMENT');
    const x = tensor(logits, [M, C]);
    expectCode(() => crossEntropyLoss(x, labels, { out: x }), 'ERR_ARGUMENT');
    expectCode(() => crossEntropyLoss(x, labels, { out: zeros([M, C + 1]) }), 'ERR_SHAPE');
  });

  it('a disposed tensor is ERR_DISPOSED', () => {
    const x = tensor(Float32Array.from(logits), [M, C]);
    x.dispose();
    expectCode(() => crossEntropyLoss(x, labels), 'ERR_DISPOSED');
    const t: Tensor = tensor([1, 2]);
    t.dispose();
    expectCode(() => mseLoss(tensor([1, 2]), t), 'ERR_DISPOSED');
  });
});
