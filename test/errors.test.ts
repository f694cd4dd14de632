// Bad input, as a specification. Every argument check of the public API throws a LoraError whose
// `code` is the documented one (README, LoraError) and whose message names the argument and what
// came; the native addon checks again what it relies on (buffer types and lengths, dimensions) and
// throws the same class. After any of these errors the process and the layer's state survive.
import { describe, expect, it } from 'vitest';
import {
  Linear, LinearLoRA, LoRA, LoraError, ops, setNumThreads, Tensor, tensor, zeros,
} from '../lib/index';
import type { LoraErrorCode } from '../lib/index';
import { native } from '../lib/backends/cpu/binding';

// Small shapes: rows, in, out, rank.
const M = 4, I = 5, O = 3, r = 2;

/** n values from f(i), as float32. */
const seq = (n: number, f: (i: number) => number) => Float32Array.from({ length: n }, (_, i) => f(i));

const W0 = () => seq(O * I, (i) => 0.5 * Math.sin(i + 1));
const b0 = () => seq(O, (i) => 0.1 * (i + 1));
const A0 = () => seq(I * r, (i) => 0.3 * Math.cos(i));
const B0 = () => seq(r * O, (i) => 0.2 * (i - 2));
const X0 = () => seq(M * I, (i) => 0.25 * Math.sin(3 * i + 0.5));
const DY0 = () => seq(M * O, (i) => 0.1 * Math.cos(2 * i));

function makeBase(): Linear {
  return new Linear(I, O, { weight: W0(), bias: b0() });
}

function makeLayer(options: Record<string, unknown> = {}): LinearLoRA {
  return new LinearLoRA(makeBase(), r, { A: A0(), B: B0(), seed: 7, ...options });
}

/** Calls fn, which must throw a LoraError with `code` and a message containing every `mention`. */
function expectError(fn: () => unknown, code: LoraErrorCode, ...mentions: string[]): LoraError {
  let thrown: unknown = undefined;
  let threw = false;
  try {
    fn();
  } catch (e) {
    thrown = e;
    threw = true;
  }
  expect(threw, 'expected the call to throw').toBe(true);
  expect(thrown).toBeInstanceOf(LoraError);
  const err = thrown as LoraError;
  expect(err.name).toBe('LoraError');
  expect(err.code).toBe(code);
  for (const m of mentions) expect(err.message).toContain(m);
  return err;
}

/** fn must return a promise (not throw synchronously) that rejects with such a LoraError. */
async function expectRejection(fn: () => Promise<unknown>, code: LoraErrorCode, ...mentions: string[]): Promise<LoraError> {
  let promise: Promise<unknown>;
  try {
    promise = fn();
  } catch (e) {
    throw new Error(`expected a rejected promise but the call threw synchronously: ${String(e)}`);
  }
  expect(promise).toBeInstanceOf(Promise);
  let thrown: unknown = undefined;
  let rejected = false;
  try {
    await promise;
  } catch (e) {
    thrown = e;
    rejected = true;
  }
  expect(rejected, 'expected the promise to reject').toBe(true);
  expect(thrown).toBeInstanceOf(LoraError);
  const err = thrown as LoraError;
  expect(err.code).toBe(code);
  for (const m of mentions) expect(err.message).toContain(m);
  return err;
}

/** The same float32 values, bit for bit (NaN payloads and the sign of zero included). */
function expectSameBits(actual: Float32Array, expected: Float32Array): void {
  expect(actual).toBeInstanceOf(Float32Array);
  expect(actual.length).toBe(expected.length);
  const a = new Uint32Array(actual.buffer, actual.byteOffset, actual.length);
  const e = new Uint32Array(expected.buffer, expected.byteOffset, expected.length);
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== e[i]) expect.fail(`element ${i}: got ${actual[i]} (0x${a[i].toString(16)}), expected ${expected[i]} (0x${e[i].toString(16)})`);
  }
}

// ------------------------------------------------------------------------------------------------
describe('tensor()', () => {
  it('a shape whose product differs from the data length is ERR_SHAPE naming data, the expected and the received count', () => {
    expectError(() => tensor(new Float32Array(6), [2, 2]), 'ERR_SHAPE', 'tensor', 'data', '4 elements', '[2, 2]', '6 elements');
    expectError(() => tensor([1, 2, 3], [4]), 'ERR_SHAPE', 'data', '3 elements');
    expectError(() => tensor(new Float32Array(0), [1, 1]), 'ERR_SHAPE', 'data', '0 elements');
  });

  it('a non-integer dimension is ERR_SHAPE naming the dimension and its value', () => {
    expectError(() => tensor(new Float32Array(5), [2, 2.5]), 'ERR_SHAPE', 'shape[1]', '2.5');
    expectError(() => tensor(new Float32Array(4), [NaN, 4]), 'ERR_SHAPE', 'shape[0]', 'NaN');
    expectError(() => tensor(new Float32Array(4), [Infinity]), 'ERR_SHAPE', 'shape[0]', 'Infinity');
    expectError(() => tensor(new Float32Array(4), ['4' as unknown as number]), 'ERR_SHAPE', 'shape[0]', 'string "4"');
  });

  it('a negative dimension is ERR_SHAPE even when the product matches', () => {
    expectError(() => tensor(new Float32Array(6), [-2, -3]), 'ERR_SHAPE', 'shape[0]', '-2');
    expectError(() => tensor(new Float32Array(6), [6, -1]), 'ERR_SHAPE', 'shape[1]', '-1');
  });

  it('a shape that is not an array is ERR_SHAPE naming shape', () => {
    expectError(() => tensor(new Float32Array(6), 6 as unknown as number[]), 'ERR_SHAPE', 'shape', 'number 6');
    expectError(() => tensor(new Float32Array(6), '2,3' as unknown as number[]), 'ERR_SHAPE', 'shape', 'string');
  });

  it('a Float64Array (or another typed array, or a plain array) is converted to a new float32 storage, not refused', () => {
    const src = new Float64Array([1.5, -2, 3.25, 1e-3]);
    const t = tensor(src, [2, 2]);
    expect(t.dtype).toBe('float32');
    expect(t.shape).toEqual([2, 2]);
    expectSameBits(t.dataSync(), Float32Array.from(src));
    src[0] = 99;  // a copy: later writes to the source are not seen
    expect(t.dataSync()[0]).toBe(1.5);
    expectSameBits(tensor(new Int32Array([1, -2, 3]), [3]).dataSync(), new Float32Array([1, -2, 3]));
    expectSameBits(tensor([0.5, 2]).dataSync(), new Float32Array([0.5, 2]));
  });

  it("the dtype option on the CPU: anything but 'float32' and 'bfloat16' is ERR_DTYPE naming options.dtype and the value", () => {
    expect(tensor(new Float32Array(4), [2, 2], { dtype: 'bfloat16' }).dtype).toBe('bfloat16');
    expectError(() => tensor(new Float32Array(4), [2, 2], { dtype: 'float64' as 'float32' }), 'ERR_DTYPE', 'options.dtype', 'float64');
    expectError(() => tensor(new Float64Array(4), [2, 2], { dtype: 'float16' as 'float32' }), 'ERR_DTYPE', 'options.dtype', 'float16');
    expect(tensor(new Float32Array(4), [2, 2], { dtype: 'float32' }).dtype).toBe('float32');
  });

  it("the device option: 'cuda' (no CUDA backend in this build) and unknown devices are ERR_DEVICE; 'auto' means the CPU", () => {
    expectError(() => tensor(new Float32Array(4), [2, 2], { device: 'cuda' as 'cpu' }), 'ERR_DEVICE', 'options.device', 'cuda');
    expectError(() => tensor(new Float32Array(4), [2, 2], { device: 'gpu' as 'cpu' }), 'ERR_DEVICE', 'options.device', 'gpu');
    expect(tensor(new Float32Array(4), [2, 2], { device: 'auto' }).device).toBe('cpu');
  });

  it('options that are not an options object are ERR_ARGUMENT naming options', () => {
    const d = new Float32Array(4);
    expectError(() => tensor(d, [2, 2], null as never), 'ERR_ARGUMENT', 'options', 'null');
    expectError(() => tensor(d, [2, 2], 'cpu' as never), 'ERR_ARGUMENT', 'options', 'string "cpu"');
    expectError(() => tensor(d, [2, 2], 42 as never), 'ERR_ARGUMENT', 'options', 'number 42');
    expectError(() => tensor(d, [2, 2], ['cpu'] as never), 'ERR_ARGUMENT', 'options', 'Array(1)');
  });

  it('data that is not an array of numbers is ERR_ARGUMENT naming data', () => {
    expectError(() => tensor('1,2,3' as never, [3]), 'ERR_ARGUMENT', 'data', 'string');
    expectError(() => tensor(3 as never), 'ERR_ARGUMENT', 'data', 'number 3');
    expectError(() => tensor({ length: 2 } as never, [2]), 'ERR_ARGUMENT', 'data', 'object');
    expectError(() => tensor(undefined as never), 'ERR_ARGUMENT', 'data', 'undefined');
  });

  it('zeros() checks its shape like tensor()', () => {
    expectError(() => zeros([2, -1]), 'ERR_SHAPE', 'zeros', 'shape[1]', '-1');
    expectError(() => zeros([1.5]), 'ERR_SHAPE', 'shape[0]', '1.5');
  });
});

// ------------------------------------------------------------------------------------------------
describe('Tensor after dispose()', () => {
  it('dataSync() is ERR_DISPOSED naming the call and the tensor', () => {
    const t = tensor(new Float32Array(6), [2, 3]);
    t.dispose();
    expect(t.disposed).toBe(true);
    expectError(() => t.dataSync(), 'ERR_DISPOSED', 'Tensor.dataSync', 'disposed', '[2, 3]');
  });

  it('data() rejects with ERR_DISPOSED', async () => {
    const t = tensor(new Float32Array(6), [2, 3]);
    t.dispose();
    await expectRejection(() => t.data(), 'ERR_DISPOSED', 'disposed');
  });

  it('reshape() is ERR_DISPOSED; on a live tensor a wrong element count is ERR_SHAPE', () => {
    const live = tensor(new Float32Array(6), [2, 3]);
    expectError(() => live.reshape([4, 2]), 'ERR_SHAPE', 'Tensor.reshape', 'shape', '6 elements', '[4, 2]', '8 elements');
    expectError(() => live.reshape([3, -2]), 'ERR_SHAPE', 'Tensor.reshape', 'shape[1]', '-2');
    expect(live.reshape([3, 2]).shape).toEqual([3, 2]);
    live.dispose();
    expectError(() => live.reshape([3, 2]), 'ERR_DISPOSED', 'Tensor.reshape', 'disposed');
  });

  it('disposing twice is harmless, and disposing a parameter disposes its gradient', () => {
    const t = tensor(new Float32Array(6), [2, 3]);
    t.dispose();
    expect(() => t.dispose()).not.toThrow();
    expect(t.disposed).toBe(true);
    expect(String(t)).toContain('disposed');
    const lora = new LoRA(I, O, r, { seed: 1 });
    lora.A.dispose();
    expect(lora.A.grad!.disposed).toBe(true);
    expectError(() => lora.zeroGrad(), 'ERR_DISPOSED', 'A.grad');
  });

  it('a disposed x passed to Linear.forward / LinearLoRA.forward is ERR_DISPOSED naming x', () => {
    const x = tensor(X0(), [M, I]);
    x.dispose();
    expectError(() => makeBase().forward(x), 'ERR_DISPOSED', 'Linear.forward', 'x', 'disposed');
    expectError(() => makeLayer().forward(x), 'ERR_DISPOSED', 'LinearLoRA.forward', 'x', 'disposed');
  });

  it('a disposed x to forwardAsync rejects with ERR_DISPOSED', async () => {
    const x = tensor(X0(), [M, I]);
    x.dispose();
    await expectRejection(() => makeLayer().forwardAsync(x), 'ERR_DISPOSED', 'LinearLoRA.forwardAsync', 'x');
    await expectRejection(() => makeBase().forwardAsync(x), 'ERR_DISPOSED', 'Linear.forwardAsync', 'x');
  });

  it('a disposed dy to backward, or a disposed out, is ERR_DISPOSED naming it', () => {
    const layer = makeLayer();
    layer.forward(tensor(X0(), [M, I]));
    const dy = tensor(DY0(), [M, O]);
    dy.dispose();
    expectError(() => layer.backward(dy), 'ERR_DISPOSED', 'LinearLoRA.backward', 'dy');
    const out = zeros([M, O]);
    out.dispose();
    expectError(() => layer.forward(tensor(X0(), [M, I]), { out }), 'ERR_DISPOSED', 'out');
  });

  it('a disposed tensor as an initial weight, bias, A or B is ERR_DISPOSED naming the option', () => {
    const w = tensor(W0(), [O, I]);
    w.dispose();
    expectError(() => new Linear(I, O, { weight: w }), 'ERR_DISPOSED', 'Linear', 'options.weight');
    const b = tensor(b0(), [O]);
    b.dispose();
    expectError(() => new Linear(I, O, { weight: W0(), bias: b }), 'ERR_DISPOSED', 'options.bias');
    const A = tensor(A0(), [I, r]);
    A.dispose();
    expectError(() => new LoRA(I, O, r, { A }), 'ERR_DISPOSED', 'options.A');
    expectError(() => new LinearLoRA(makeBase(), r, { A }), 'ERR_DISPOSED', 'options.A');
  });

  it('a layer whose base weight was disposed refuses to run with ERR_DISPOSED', () => {
    const base = makeBase();
    const layer = new LinearLoRA(base, r, { A: A0(), B: B0() });
    base.dispose();
    expectError(() => layer.forward(X0()), 'ERR_DISPOSED', 'base.weight');
    expectError(() => base.forward(X0()), 'ERR_DISPOSED', 'Linear.forward', 'weight');
  });
});

// ------------------------------------------------------------------------------------------------
describe('Linear', () => {
  it('inFeatures / outFeatures that are not integers >= 1 are ERR_SHAPE naming them and the value', () => {
    expectError(() => new Linear(0, O), 'ERR_SHAPE', 'Linear', 'inFeatures', 'number 0');
    expectError(() => new Linear(-5, O), 'ERR_SHAPE', 'inFeatures', '-5');
    expectError(() => new Linear(2.5, O), 'ERR_SHAPE', 'inFeatures', '2.5');
    expectError(() => new Linear(NaN, O), 'ERR_SHAPE', 'inFeatures', 'NaN');
    expectError(() => new Linear('5' as never, O), 'ERR_SHAPE', 'inFeatures', 'string "5"');
    expectError(() => new Linear(I, 0), 'ERR_SHAPE', 'outFeatures', 'number 0');
    expectError(() => new Linear(I, 3.5), 'ERR_SHAPE', 'outFeatures', '3.5');
    expectError(() => new Linear(I, 2 ** 31), 'ERR_SHAPE', 'outFeatures', String(2 ** 31));
  });

  it('options that are not an object are ERR_ARGUMENT', () => {
    expectError(() => new Linear(I, O, 'weights' as never), 'ERR_ARGUMENT', 'Linear', 'options', 'string');
    expectError(() => new Linear(I, O, null as never), 'ERR_ARGUMENT', 'options', 'null');
    expectError(() => new Linear(I, O, [W0()] as never), 'ERR_ARGUMENT', 'options', 'Array(1)');
  });

  it('a weight of the wrong shape is ERR_SHAPE naming options.weight, the expected and the received shape', () => {
    expectError(() => new Linear(I, O, { weight: tensor(W0(), [I, O]) }), 'ERR_SHAPE', 'options.weight', '[3, 5]', '[5, 3]');
    expectError(() => new Linear(I, O, { weight: tensor(W0(), [O * I]) }), 'ERR_SHAPE', 'options.weight', '[15]');
    expectError(() => new Linear(I, O, { weight: new Float32Array(O * I - 1) }), 'ERR_SHAPE', 'options.weight', '[3, 5]', '14 elements');
    expectError(() => new Linear(I, O, { weight: new Float32Array(O * I + 1) }), 'ERR_SHAPE', 'options.weight', '16 elements');
  });

  it('a weight of the wrong type is ERR_DTYPE (typed arrays) or ERR_ARGUMENT (anything else)', () => {
    expectError(() => new Linear(I, O, { weight: new Float64Array(O * I) as never }), 'ERR_DTYPE', 'options.weight', 'Float64Array(15)');
    expectError(() => new Linear(I, O, { weight: Array.from(W0()) as never }), 'ERR_ARGUMENT', 'options.weight', 'Array(15)');
    expectError(() => new Linear(I, O, { weight: 'W' as never }), 'ERR_ARGUMENT', 'options.weight', 'string');
  });

  it('a bias of the wrong shape or type is refused naming options.bias', () => {
    expectError(() => new Linear(I, O, { weight: W0(), bias: new Float32Array(O + 1) }), 'ERR_SHAPE', 'options.bias', '[3]', '4 elements');
    expectError(() => new Linear(I, O, { weight: W0(), bias: tensor(new Float32Array(O), [1, O]) }), 'ERR_SHAPE', 'options.bias', '[1, 3]');
    expectError(() => new Linear(I, O, { weight: W0(), bias: new Float64Array(O) as never }), 'ERR_DTYPE', 'options.bias', 'Float64Array');
    expectError(() => new Linear(I, O, { weight: W0(), bias: 'yes' as never }), 'ERR_ARGUMENT', 'options.bias', 'string');
  });

  it('NaN or ±Infinity in weight or bias is ERR_NOT_FINITE naming the option, the value and its index', () => {
    const w = W0();
    w[7] = NaN;
    expectError(() => new Linear(I, O, { weight: w }), 'ERR_NOT_FINITE', 'Linear', 'options.weight', 'NaN', 'index 7');
    const w2 = W0();
    w2[0] = -Infinity;
    expectError(() => new Linear(I, O, { weight: tensor(w2, [O, I]) }), 'ERR_NOT_FINITE', 'options.weight', '-Infinity', 'index 0');
    const b = b0();
    b[2] = Infinity;
    expectError(() => new Linear(I, O, { weight: W0(), bias: b }), 'ERR_NOT_FINITE', 'options.bias', 'Infinity', 'index 2');
  });

  it('a bad seed is ERR_ARGUMENT naming seed', () => {
    expectError(() => new Linear(I, O, { seed: -1 }), 'ERR_ARGUMENT', 'seed', '-1');
    expectError(() => new Linear(I, O, { seed: 0.5 }), 'ERR_ARGUMENT', 'seed', '0.5');
    expectError(() => new Linear(I, O, { seed: '7' as never }), 'ERR_ARGUMENT', 'seed', 'string');
  });

  it('forward: a wrong last dimension is ERR_SHAPE, a Float64Array ERR_DTYPE, a string ERR_ARGUMENT, each naming x', () => {
    const base = makeBase();
    expectError(() => base.forward(tensor(new Float32Array(M * 4), [M, 4])), 'ERR_SHAPE', 'Linear.forward', 'x', '(..., 5)', '[4, 4]');
    expectError(() => base.forward(new Float32Array(7)), 'ERR_SHAPE', 'x', '[7]');
    expectError(() => base.forward(new Float64Array(M * I) as never), 'ERR_DTYPE', 'x', 'Float64Array(20)');
    expectError(() => base.forward('x' as never), 'ERR_ARGUMENT', 'x', 'string');
  });

  it('backward: a wrong last dimension of dy is ERR_SHAPE naming dy', () => {
    const base = makeBase();
    expectError(() => base.backward(tensor(new Float32Array(M * I), [M, I])), 'ERR_SHAPE', 'Linear.backward', 'dy', '(..., 3)', '[4, 5]');
    expectError(() => base.backward(new Int8Array(M * O) as never), 'ERR_DTYPE', 'dy', 'Int8Array');
  });

  it('out: not a Tensor is ERR_ARGUMENT, the wrong shape ERR_SHAPE, each naming out', () => {
    const base = makeBase();
    const x = tensor(X0(), [M, I]);
    expectError(() => base.forward(x, { out: new Float32Array(M * O) as never }), 'ERR_ARGUMENT', 'out', 'Float32Array');
    expectError(() => base.forward(x, { out: zeros([M, O + 1]) }), 'ERR_SHAPE', 'out', '[4, 3]', '[4, 4]');
    expectError(() => base.forward(x, 'out' as never), 'ERR_ARGUMENT', 'options', 'string');
  });
});

// ------------------------------------------------------------------------------------------------
describe('LoRA', () => {
  it('rank 0, 1.5, -1, NaN is ERR_SHAPE naming rank and the value', () => {
    expectError(() => new LoRA(I, O, 0), 'ERR_SHAPE', 'LoRA', 'rank', 'number 0');
    expectError(() => new LoRA(I, O, 1.5), 'ERR_SHAPE', 'rank', '1.5');
    expectError(() => new LoRA(I, O, -1), 'ERR_SHAPE', 'rank', '-1');
    expectError(() => new LoRA(I, O, NaN), 'ERR_SHAPE', 'rank', 'NaN');
    expectError(() => new LoRA(I, O, undefined as never), 'ERR_SHAPE', 'rank', 'undefined');
  });

  it('bad inFeatures / outFeatures are ERR_SHAPE naming them', () => {
    expectError(() => new LoRA(0, O, r), 'ERR_SHAPE', 'inFeatures', '0');
    expectError(() => new LoRA(I, -3, r), 'ERR_SHAPE', 'outFeatures', '-3');
  });

  it('alpha that is not a finite number, or rslora that is not a boolean, is ERR_ARGUMENT naming it', () => {
    expectError(() => new LoRA(I, O, r, { alpha: NaN }), 'ERR_ARGUMENT', 'alpha', 'NaN');
    expectError(() => new LoRA(I, O, r, { alpha: Infinity }), 'ERR_ARGUMENT', 'alpha', 'Infinity');
    expectError(() => new LoRA(I, O, r, { alpha: '16' as never }), 'ERR_ARGUMENT', 'alpha', 'string "16"');
    expectError(() => new LoRA(I, O, r, { rslora: 1 as never }), 'ERR_ARGUMENT', 'rslora', 'number 1');
    const lora = new LoRA(I, O, r, { seed: 1 });
    expectError(() => lora.configure({ alpha: NaN }), 'ERR_ARGUMENT', 'LoRA.configure', 'alpha');
    expect(lora.scaling).toBe(1);  // a refused configure changes nothing
  });

  it('a bad seed is ERR_ARGUMENT naming seed', () => {
    expectError(() => new LoRA(I, O, r, { seed: -1 }), 'ERR_ARGUMENT', 'seed', '-1');
    expectError(() => new LoRA(I, O, r, { seed: 1.5 }), 'ERR_ARGUMENT', 'seed', '1.5');
    expectError(() => new LoRA(I, O, r, { seed: 2 ** 53 + 2 }), 'ERR_ARGUMENT', 'seed');
    expectError(() => new LoRA(I, O, r, { seed: NaN }), 'ERR_ARGUMENT', 'seed', 'NaN');
  });

  it('a bad seed is refused even when A is given ', () => {
    expectError(() => new LoRA(I, O, r, { seed: -1, A: A0() }), 'ERR_ARGUMENT', 'seed', '-1');
  });

  it('A or B of the wrong shape is ERR_SHAPE naming options.A / options.B with both shapes', () => {
    expectError(() => new LoRA(I, O, r, { A: tensor(A0(), [r, I]) }), 'ERR_SHAPE', 'options.A', '[5, 2]', '[2, 5]');
    expectError(() => new LoRA(I, O, r, { A: new Float32Array(I * r + 1) }), 'ERR_SHAPE', 'options.A', '11 elements');
    expectError(() => new LoRA(I, O, r, { B: tensor(B0(), [O, r]) }), 'ERR_SHAPE', 'options.B', '[2, 3]', '[3, 2]');
    expectError(() => new LoRA(I, O, r, { B: new Float64Array(r * O) as never }), 'ERR_DTYPE', 'options.B', 'Float64Array');
  });

  it('NaN in A or Infinity in B is ERR_NOT_FINITE naming the option and the index', () => {
    const A = A0();
    A[3] = NaN;
    expectError(() => new LoRA(I, O, r, { A }), 'ERR_NOT_FINITE', 'options.A', 'NaN', 'index 3');
    const B = B0();
    B[5] = Infinity;
    expectError(() => new LoRA(I, O, r, { B }), 'ERR_NOT_FINITE', 'options.B', 'Infinity', 'index 5');
  });
});

// ------------------------------------------------------------------------------------------------
describe('LinearLoRA construction', () => {
  it('a base that is not a Linear is ERR_ARGUMENT naming base', () => {
    expectError(() => new LinearLoRA({ inFeatures: I, outFeatures: O } as never, r), 'ERR_ARGUMENT', 'LinearLoRA', 'base', 'object');
    expectError(() => new LinearLoRA(undefined as never, r), 'ERR_ARGUMENT', 'base', 'undefined');
  });

  it('rank 0, 1.5, -1 is ERR_SHAPE naming rank', () => {
    expectError(() => new LinearLoRA(makeBase(), 0), 'ERR_SHAPE', 'LinearLoRA', 'rank', 'number 0');
    expectError(() => new LinearLoRA(makeBase(), 1.5), 'ERR_SHAPE', 'rank', '1.5');
    expectError(() => new LinearLoRA(makeBase(), -1), 'ERR_SHAPE', 'rank', '-1');
  });

  it('dropout 1, -0.1, NaN or a string is ERR_ARGUMENT naming dropout and the value', () => {
    expectError(() => new LinearLoRA(makeBase(), r, { dropout: 1 }), 'ERR_ARGUMENT', 'dropout', '[0, 1)', 'number 1');
    expectError(() => new LinearLoRA(makeBase(), r, { dropout: -0.1 }), 'ERR_ARGUMENT', 'dropout', '-0.1');
    expectError(() => new LinearLoRA(makeBase(), r, { dropout: NaN }), 'ERR_ARGUMENT', 'dropout', 'NaN');
    expectError(() => new LinearLoRA(makeBase(), r, { dropout: '0.1' as never }), 'ERR_ARGUMENT', 'dropout', 'string');
    expect(new LinearLoRA(makeBase(), r, { dropout: 0.999 }).dropout).toBe(0.999);
  });

  it('fused / checkFinite that are not booleans are ERR_ARGUMENT naming the option', () => {
    expectError(() => new LinearLoRA(makeBase(), r, { fused: 'true' as never }), 'ERR_ARGUMENT', 'options.fused', 'string "true"');
    expectError(() => new LinearLoRA(makeBase(), r, { fused: 1 as never }), 'ERR_ARGUMENT', 'options.fused', 'number 1');
    expectError(() => new LinearLoRA(makeBase(), r, { checkFinite: 'yes' as never }), 'ERR_ARGUMENT', 'options.checkFinite', 'string');
  });

  it('a bad seed is ERR_ARGUMENT naming seed (also when A is given)', () => {
    expectError(() => new LinearLoRA(makeBase(), r, { seed: -1 }), 'ERR_ARGUMENT', 'seed', '-1');
    expectError(() => new LinearLoRA(makeBase(), r, { seed: 2.5, A: A0() }), 'ERR_ARGUMENT', 'seed', '2.5');
    expectError(() => new LinearLoRA(makeBase(), r, { seed: {} as never }), 'ERR_ARGUMENT', 'seed', 'object');
  });

  it('A / B of the wrong shape, or NaN in A, are refused naming the option', () => {
    expectError(() => new LinearLoRA(makeBase(), r, { A: tensor(A0(), [r, I]) }), 'ERR_SHAPE', 'options.A', '[5, 2]', '[2, 5]');
    expectError(() => new LinearLoRA(makeBase(), r, { B: new Float32Array(r * O - 1) }), 'ERR_SHAPE', 'options.B', '5 elements');
    // A of a different rank than the layer's: (I, 3) against r = 2.
    expectError(() => new LinearLoRA(makeBase(), r, { A: tensor(new Float32Array(I * 3), [I, 3]) }), 'ERR_SHAPE', 'options.A', '[5, 3]');
    const A = A0();
    A[9] = NaN;
    expectError(() => new LinearLoRA(makeBase(), r, { A }), 'ERR_NOT_FINITE', 'options.A', 'NaN', 'index 9');
  });

  it('alpha / rslora / options are checked', () => {
    expectError(() => new LinearLoRA(makeBase(), r, { alpha: NaN }), 'ERR_ARGUMENT', 'alpha', 'NaN');
    expectError(() => new LinearLoRA(makeBase(), r, { rslora: 'no' as never }), 'ERR_ARGUMENT', 'rslora', 'string');
    expectError(() => new LinearLoRA(makeBase(), r, 0.1 as never), 'ERR_ARGUMENT', 'options', 'number 0.1');
  });

  it('train(mode) with a non-boolean is ERR_ARGUMENT naming mode, and leaves the mode alone', () => {
    const layer = makeLayer();
    expectError(() => layer.train('eval' as never), 'ERR_ARGUMENT', 'LinearLoRA.train', 'mode', 'string "eval"');
    expect(layer.training).toBe(true);
  });
});

// ------------------------------------------------------------------------------------------------
describe('LinearLoRA forward / backward', () => {
  it('forward: a wrong last dimension is ERR_SHAPE naming x, the expected and the received shape', () => {
    const layer = makeLayer();
    expectError(() => layer.forward(tensor(new Float32Array(M * 4), [M, 4])), 'ERR_SHAPE', 'LinearLoRA.forward', 'x', '(..., 5)', '[4, 4]');
    expectError(() => layer.forward(tensor(new Float32Array(2 * M * I), [2, M, I + O])), 'ERR_SHAPE', 'x', '[2, 4, 8]');
    expectError(() => layer.forward(new Float32Array(M * I + 1)), 'ERR_SHAPE', 'x', '[21]');
    expectError(() => layer.forward(tensor(new Float32Array(1), [])), 'ERR_SHAPE', 'x', '[]');
  });

  it('forward: a Float64Array is ERR_DTYPE; a string, a number, undefined or a plain array is ERR_ARGUMENT', () => {
    const layer = makeLayer();
    expectError(() => layer.forward(new Float64Array(M * I) as never), 'ERR_DTYPE', 'LinearLoRA.forward', 'x', 'Float64Array(20)');
    expectError(() => layer.forward('hello' as never), 'ERR_ARGUMENT', 'x', 'string "hello"');
    expectError(() => layer.forward(3 as never), 'ERR_ARGUMENT', 'x', 'number 3');
    expectError(() => layer.forward(undefined as never), 'ERR_ARGUMENT', 'x', 'undefined');
    expectError(() => layer.forward(Array.from(X0()) as never), 'ERR_ARGUMENT', 'x', 'Array(20)');
  });

  it('a hand-built Tensor whose storage does not match its shape is ERR_SHAPE naming x, never a silent partial result', () => {
    const layer = makeLayer();
    // The Tensor constructor wraps without checking (tensor() is the checked way); every use checks.
    expectError(() => layer.forward(new Tensor(new Float32Array(I), [2, I])), 'ERR_SHAPE', 'LinearLoRA.forward', 'x', '10 elements', '[2, 5]', '5 elements');
    expectError(() => layer.forward(new Tensor(new Float32Array(7), [2, I])), 'ERR_SHAPE', 'x', '7 elements');
    expectError(() => makeBase().forward(new Tensor(new Float32Array(3 * I), [2, I])), 'ERR_SHAPE', 'Linear.forward', 'x', '15 elements');
    layer.forward(tensor(X0(), [M, I]));
    expectError(() => layer.backward(new Tensor(new Float32Array(O), [M, O])), 'ERR_SHAPE', 'dy', '3 elements');
  });

  it('forward: options / out are checked', () => {
    const layer = makeLayer();
    const x = tensor(X0(), [M, I]);
    expectError(() => layer.forward(x, 5 as never), 'ERR_ARGUMENT', 'options', 'number 5');
    expectError(() => layer.forward(x, { out: zeros([M + 1, O]) }), 'ERR_SHAPE', 'out', '[4, 3]', '[5, 3]');
    expectError(() => layer.forward(x, { out: {} as never }), 'ERR_ARGUMENT', 'out', 'object');
  });

  it('backward before any forward is ERR_ARGUMENT saying so', () => {
    const layer = makeLayer();
    expectError(() => layer.backward(tensor(DY0(), [M, O])), 'ERR_ARGUMENT', 'LinearLoRA.backward', 'forward()', 'none');
  });

  it('backward after merge() (no forward state to train on) is ERR_ARGUMENT pointing at unmerge()', () => {
    const layer = makeLayer();
    layer.merge();
    layer.forward(tensor(X0(), [M, I]));
    expectError(() => layer.backward(tensor(DY0(), [M, O])), 'ERR_ARGUMENT', 'forward()', 'unmerge()');
  });

  it('dy with the wrong number of rows is ERR_SHAPE naming dy, the rows of the last forward and what came', () => {
    const layer = makeLayer();
    layer.forward(tensor(X0(), [M, I]));
    expectError(() => layer.backward(tensor(new Float32Array((M - 1) * O), [M - 1, O])), 'ERR_SHAPE', 'LinearLoRA.backward', 'dy', '4 rows', '[3, 3]');
    expectError(() => layer.backward(new Float32Array((M + 1) * O)), 'ERR_SHAPE', 'dy', '[5, 3]');
  });

  it('dy with the wrong last dimension, or of the wrong type, is refused naming dy', () => {
    const layer = makeLayer();
    layer.forward(tensor(X0(), [M, I]));
    expectError(() => layer.backward(tensor(new Float32Array(M * I), [M, I])), 'ERR_SHAPE', 'dy', '(..., 3)', '[4, 5]');
    expectError(() => layer.backward(new Float64Array(M * O) as never), 'ERR_DTYPE', 'dy', 'Float64Array(12)');
    expectError(() => layer.backward(null as never), 'ERR_ARGUMENT', 'dy', 'null');
  });

  it('backward options: inputGrad that is not a boolean, or an out of the wrong shape, is refused', () => {
    const layer = makeLayer();
    layer.forward(tensor(X0(), [M, I]));
    const dy = tensor(DY0(), [M, O]);
    expectError(() => layer.backward(dy, { inputGrad: 'no' as never }), 'ERR_ARGUMENT', 'options.inputGrad', 'string "no"');
    expectError(() => layer.backward(dy, { out: zeros([M, O]) }), 'ERR_SHAPE', 'out', '[4, 5]', '[4, 3]');
  });

  it('checkFinite: true refuses NaN in x and ±Infinity in dy with ERR_NOT_FINITE naming the argument and index', () => {
    const layer = makeLayer({ checkFinite: true });
    const x = X0();
    x[6] = NaN;
    expectError(() => layer.forward(tensor(x, [M, I])), 'ERR_NOT_FINITE', 'LinearLoRA.forward', 'x', 'NaN', 'index 6');
    layer.forward(tensor(X0(), [M, I]));
    const dy = DY0();
    dy[11] = -Infinity;
    expectError(() => layer.backward(tensor(dy, [M, O])), 'ERR_NOT_FINITE', 'LinearLoRA.backward', 'dy', '-Infinity', 'index 11');
    const dyNaN = DY0();
    dyNaN[0] = NaN;
    expectError(() => layer.backward(dyNaN), 'ERR_NOT_FINITE', 'dy', 'NaN', 'index 0');
  });

  it('checkFinite: true also guards the async calls', async () => {
    const layer = makeLayer({ checkFinite: true });
    const x = X0();
    x[1] = Infinity;
    await expectRejection(() => layer.forwardAsync(x), 'ERR_NOT_FINITE', 'LinearLoRA.forwardAsync', 'x', 'Infinity', 'index 1');
  });

  it('without checkFinite (the default) NaN input is not refused: the check is opt-in', () => {
    const layer = makeLayer();
    const x = X0();
    x[0] = NaN;
    const y = layer.forward(tensor(x, [M, I])).dataSync();
    expect(Number.isNaN(y[0])).toBe(true);
  });

  it('a refused backward leaves the gradients untouched; a refused forward keeps the last forward for backward', () => {
    const ref = makeLayer({ checkFinite: true });
    ref.forward(tensor(X0(), [M, I]));
    const dxRef = ref.backward(tensor(DY0(), [M, O]))!.dataSync();

    const layer = makeLayer({ checkFinite: true });
    layer.forward(tensor(X0(), [M, I]));
    const gA = layer.lora.A.grad!.dataSync();
    const gB = layer.lora.B.grad!.dataSync();
    const bad = DY0();
    bad[4] = NaN;
    expectError(() => layer.backward(bad), 'ERR_NOT_FINITE', 'dy');
    expectSameBits(layer.lora.A.grad!.dataSync(), gA);
    expectSameBits(layer.lora.B.grad!.dataSync(), gB);
    // Refused forwards (another M, wrong shape, NaN) must not replace what the good forward saved.
    const badX = seq(2 * M * I, () => NaN);
    expectError(() => layer.forward(tensor(badX, [2 * M, I])), 'ERR_NOT_FINITE', 'x');
    expectError(() => layer.forward(new Float32Array(7)), 'ERR_SHAPE', 'x');
    const dx = layer.backward(tensor(DY0(), [M, O]))!.dataSync();
    expectSameBits(dx, dxRef);
    expectSameBits(layer.lora.A.grad!.dataSync(), ref.lora.A.grad!.dataSync());
    expectSameBits(layer.lora.B.grad!.dataSync(), ref.lora.B.grad!.dataSync());
  });
});

// ------------------------------------------------------------------------------------------------
describe('merge()', () => {
  it('a merge whose result would overflow is ERR_NOT_FINITE, and W stays bit for bit as it was', () => {
    const layer = makeLayer({ A: seq(I * r, () => 10), B: seq(r * O, () => 3e38) });
    const before = layer.base.weight.dataSync();
    const x = tensor(X0(), [M, I]);
    const yBefore = layer.forward(x).dataSync();
    expectError(() => layer.merge(), 'ERR_NOT_FINITE', 'LinearLoRA.merge', 'merged weight', 'unchanged');
    expectSameBits(layer.base.weight.dataSync(), before);
    expect(layer.merged).toBe(false);
    expectSameBits(layer.forward(x).dataSync(), yBefore);
  });

  it('one overflowing element refuses the whole merge: no row of W is written', () => {
    const W = W0();
    W[I * (O - 1) + 2] = 3.4e38;  // last row, near FLT_MAX
    const base = new Linear(I, O, { weight: W, bias: b0() });
    const B = new Float32Array(r * O);
    B[O - 1] = 1e37;  // only output O-1 gets an update, with A ≥ 1 it overflows there
    const layer = new LinearLoRA(base, r, { A: seq(I * r, () => 1), B });
    const before = base.weight.dataSync();
    expectError(() => layer.merge(), 'ERR_NOT_FINITE', 'merged weight');
    expectSameBits(base.weight.dataSync(), before);
    expect(layer.merged).toBe(false);
    // Once the adapter is sane again the merge goes through.
    layer.lora.B.buffer().fill(0);
    layer.merge();
    expect(layer.merged).toBe(true);
    expectSameBits(base.weight.dataSync(), before);
  });
});

// ------------------------------------------------------------------------------------------------
describe('async and sync on one layer', () => {
  it('a sync forward while a forwardAsync is pending is ERR_BACKEND; the async call still resolves correctly', async () => {
    const twin = makeLayer();
    const yRef = twin.forward(tensor(X0(), [M, I])).dataSync();

    const layer = makeLayer();
    const pending = layer.forwardAsync(tensor(X0(), [M, I]));
    expectError(() => layer.forward(tensor(X0(), [M, I])), 'ERR_BACKEND', 'LinearLoRA.forward', 'pending');
    expectError(() => layer.backward(tensor(DY0(), [M, O])), 'ERR_BACKEND', 'LinearLoRA.backward', 'pending');
    expectError(() => layer.merge(), 'ERR_BACKEND', 'LinearLoRA.merge', 'pending');
    const y = await pending;
    expectSameBits(y.dataSync(), yRef);
    expect(layer.merged).toBe(false);
    // Once the queue is empty, sync calls work again and agree.
    expectSameBits(layer.forward(tensor(X0(), [M, I])).dataSync(), yRef);
  });

  it('a sync backward while a backwardAsync is pending is ERR_BACKEND; the async gradients are right', async () => {
    const twin = makeLayer();
    twin.forward(tensor(X0(), [M, I]));
    const dxRef = twin.backward(tensor(DY0(), [M, O]))!.dataSync();

    const layer = makeLayer();
    layer.forward(tensor(X0(), [M, I]));
    const pending = layer.backwardAsync(tensor(DY0(), [M, O]));
    expectError(() => layer.backward(tensor(DY0(), [M, O])), 'ERR_BACKEND', 'pending');
    const dx = await pending;
    expectSameBits(dx!.dataSync(), dxRef);
    expectSameBits(layer.lora.A.grad!.dataSync(), twin.lora.A.grad!.dataSync());
    expectSameBits(layer.lora.B.grad!.dataSync(), twin.lora.B.grad!.dataSync());
  });

  it('a refused async call rejects with a LoraError and does not jam the queue', async () => {
    const layer = makeLayer();
    const bad = layer.forwardAsync(new Float64Array(M * I) as never);
    const good = layer.forwardAsync(tensor(X0(), [M, I]));
    await expectRejection(() => bad, 'ERR_DTYPE', 'LinearLoRA.forwardAsync', 'x');
    const y = await good;
    expectSameBits(y.dataSync(), makeLayer().forward(tensor(X0(), [M, I])).dataSync());
    await expectRejection(() => makeLayer().backwardAsync(tensor(DY0(), [M, O])), 'ERR_ARGUMENT', 'forward()');
    expect(() => layer.forward(tensor(X0(), [M, I]))).not.toThrow();  // nothing left pending
  });
});

// ------------------------------------------------------------------------------------------------
describe('a disposed LinearLoRA', () => {
  it('refuses every call with ERR_DISPOSED; disposing twice is harmless; the base Linear lives on', async () => {
    const layer = makeLayer();
    layer.forward(tensor(X0(), [M, I]));
    layer.dispose();
    expect(() => layer.dispose()).not.toThrow();
    const x = tensor(X0(), [M, I]);
    const dy = tensor(DY0(), [M, O]);
    expectError(() => layer.forward(x), 'ERR_DISPOSED', 'LinearLoRA.forward', 'disposed');
    expectError(() => layer.backward(dy), 'ERR_DISPOSED', 'LinearLoRA.backward', 'disposed');
    expectError(() => layer.merge(), 'ERR_DISPOSED', 'LinearLoRA.merge', 'disposed');
    expectError(() => layer.unmerge(), 'ERR_DISPOSED', 'LinearLoRA.unmerge', 'disposed');
    expectError(() => layer.zeroGrad(), 'ERR_DISPOSED', 'disposed');
    await expectRejection(() => layer.forwardAsync(x), 'ERR_DISPOSED', 'LinearLoRA.forwardAsync', 'disposed');
    await expectRejection(() => layer.backwardAsync(dy), 'ERR_DISPOSED', 'LinearLoRA.backwardAsync', 'disposed');
    expect(layer.lora.A.disposed).toBe(true);
    expect(layer.base.forward(x).shape).toEqual([M, O]);
  });
});

// ------------------------------------------------------------------------------------------------
describe('setNumThreads', () => {
  it('0, 1.5, -1, NaN or a string is a LoraError naming n and the value', () => {
    for (const [bad, shown] of [[0, 'number 0'], [1.5, '1.5'], [-1, '-1'], [NaN, 'NaN'], ['2', 'string "2"']] as const) {
      let err: unknown;
      try {
        setNumThreads(bad as number);
      } catch (e) {
        err = e;
      }
      expect(err, `setNumThreads(${String(bad)})`).toBeInstanceOf(LoraError);
      expect((err as LoraError).message).toContain('setNumThreads');
      expect((err as LoraError).message).toContain(' n ');
      expect((err as LoraError).message).toContain(shown);
    }
  });

  it('a bad thread count is ERR_ARGUMENT, as the addon says for the same value ', () => {
    expectError(() => setNumThreads(0), 'ERR_ARGUMENT', 'n', '0');
  });

  it('a count above the addon limit is refused by the native check (ERR_ARGUMENT naming n)', () => {
    expectError(() => setNumThreads(5000), 'ERR_ARGUMENT', 'setNumThreads', 'n');
  });

  it('the message for a count above the addon limit says what came ', () => {
    expectError(() => setNumThreads(5000), 'ERR_ARGUMENT', 'n', '5000');
  });

  it('the addon refuses bad counts on its own too', () => {
    expectError(() => native.setNumThreads(0), 'ERR_ARGUMENT', 'setNumThreads', 'n');
    expectError(() => native.setNumThreads(2.5), 'ERR_ARGUMENT', 'setNumThreads');
    expectError(() => (native.setNumThreads as (n?: unknown) => void)('4'), 'ERR_ARGUMENT', 'setNumThreads');
  });
});

// ------------------------------------------------------------------------------------------------
describe('ops.loraForward / ops.loraBackward', () => {
  const fwdInput = () => ({
    x: tensor(X0(), [M, I]), weight: tensor(W0(), [O, I]), bias: tensor(b0(), [O]),
    A: tensor(A0(), [I, r]), B: tensor(B0(), [r, O]), scaling: 0.5,
  });
  const bwdInput = () => {
    const f = fwdInput();
    const { s } = ops.loraForward(f);
    return { x: f.x, s, dy: tensor(DY0(), [M, O]), weight: f.weight, A: f.A, B: f.B, scaling: 0.5 };
  };

  it('a missing operand is ERR_ARGUMENT naming it', () => {
    const { B: _B, ...noB } = fwdInput();
    expectError(() => ops.loraForward(noB as never), 'ERR_ARGUMENT', 'ops.loraForward', 'B', 'undefined');
    const { weight: _w, ...noW } = fwdInput();
    expectError(() => ops.loraForward({ ...noW, O } as never), 'ERR_ARGUMENT', 'weight', 'undefined');
    const { x: _x, ...noX } = fwdInput();
    expectError(() => ops.loraForward({ ...noX, M } as never), 'ERR_ARGUMENT', 'x', 'undefined');
    const { dy: _dy, ...noDy } = bwdInput();
    expectError(() => ops.loraBackward({ ...noDy } as never), 'ERR_ARGUMENT', 'ops.loraBackward', 'dy', 'undefined');
    const { s: _s, ...noS } = bwdInput();
    expectError(() => ops.loraBackward({ ...noS } as never), 'ERR_ARGUMENT', 's', 'undefined');
    expectError(() => ops.loraForward(null as never), 'ERR_ARGUMENT', 'ops.loraForward', 'null');
    expectError(() => ops.loraBackward(7 as never), 'ERR_ARGUMENT', 'ops.loraBackward', 'number 7');
  });

  it('ops.loraForward() without an input object is ERR_ARGUMENT ', () => {
    expectError(() => ops.loraForward(undefined as never), 'ERR_ARGUMENT', 'ops.loraForward', 'undefined');
  });

  it('a missing x is ERR_ARGUMENT naming x even when M is not given ', () => {
    const { x: _x, ...noX } = fwdInput();
    expectError(() => ops.loraForward(noX as never), 'ERR_ARGUMENT', 'x');
  });

  it('inconsistent dimensions between operands are ERR_SHAPE naming the operand and both values', () => {
    expectError(() => ops.loraForward({ ...fwdInput(), weight: tensor(new Float32Array(O * 6), [O, 6]) }), 'ERR_SHAPE', 'weight', 'I = 5', 'I = 6');
    expectError(() => ops.loraForward({ ...fwdInput(), B: tensor(new Float32Array(3 * O), [3, O]) }), 'ERR_SHAPE', 'B', 'r = 2', 'r = 3');
    expectError(() => ops.loraForward({ ...fwdInput(), bias: tensor(new Float32Array(O + 1), [O + 1]) }), 'ERR_SHAPE', 'bias', 'O = 3', 'O = 4');
    expectError(() => ops.loraForward({ ...fwdInput(), M: M + 1 }), 'ERR_SHAPE', 'x', 'M = 5', 'M = 4');
    expectError(() => ops.loraBackward({ ...bwdInput(), dy: tensor(new Float32Array((M + 1) * O), [M + 1, O]) }), 'ERR_SHAPE', 'dy', 'M = 4', 'M = 5');
    expectError(() => ops.loraBackward({ ...bwdInput(), s: tensor(new Float32Array(M * 3), [M, 3]) }), 'ERR_SHAPE', 's', 'r = 2', 'r = 3');
    expectError(() => ops.loraForward({ ...fwdInput(), x: tensor(new Float32Array(M * I), [1, M, I]) }), 'ERR_SHAPE', 'x', '2-d', '[1, 4, 5]');
  });

  it('Float32Arrays without explicit dimensions are ERR_SHAPE naming the missing dimension', () => {
    const f = { x: X0(), weight: W0(), A: A0(), B: B0(), scaling: 1 };
    expectError(() => ops.loraForward(f), 'ERR_SHAPE', 'ops.loraForward', 'M', 'undefined');
    expectError(() => ops.loraForward({ ...f, M, I, O }), 'ERR_SHAPE', 'r', 'undefined');
    const { y } = ops.loraForward({ ...f, M, I, O, r });  // with all four it works
    expect(y.shape).toEqual([M, O]);
    expectError(() => ops.loraForward({ ...f, x: new Float32Array(M * I - 1), M, I, O, r }), 'ERR_SHAPE', 'x', '[4, 5]', '19 elements');
    expectError(() => ops.loraBackward({ x: X0(), s: new Float32Array(M * r), dy: DY0(), weight: W0(), A: A0(), B: B0(), scaling: 1, M, I, O }), 'ERR_SHAPE', 'ops.loraBackward', 'r');
  });

  it('bad explicit dimensions are ERR_SHAPE naming them', () => {
    const f = { x: X0(), weight: W0(), A: A0(), B: B0(), scaling: 1, M, I, O, r };
    expectError(() => ops.loraForward({ ...f, r: 0 }), 'ERR_SHAPE', 'r', 'number 0');
    expectError(() => ops.loraForward({ ...f, M: -1 }), 'ERR_SHAPE', 'M', '-1');
    expectError(() => ops.loraForward({ ...f, I: 2.5 }), 'ERR_SHAPE', 'I', '2.5');
  });

  it('a non-finite or missing scaling is ERR_ARGUMENT naming scaling', () => {
    expectError(() => ops.loraForward({ ...fwdInput(), scaling: NaN }), 'ERR_ARGUMENT', 'ops.loraForward', 'scaling', 'NaN');
    expectError(() => ops.loraForward({ ...fwdInput(), scaling: Infinity }), 'ERR_ARGUMENT', 'scaling', 'Infinity');
    expectError(() => ops.loraForward({ ...fwdInput(), scaling: undefined as never }), 'ERR_ARGUMENT', 'scaling', 'undefined');
    expectError(() => ops.loraBackward({ ...bwdInput(), scaling: -Infinity }), 'ERR_ARGUMENT', 'ops.loraBackward', 'scaling', '-Infinity');
  });

  it('operands of the wrong type are ERR_DTYPE (typed arrays) or ERR_ARGUMENT', () => {
    expectError(() => ops.loraForward({ ...fwdInput(), A: new Float64Array(I * r) as never }), 'ERR_DTYPE', 'A', 'Float64Array(10)');
    expectError(() => ops.loraBackward({ ...bwdInput(), dy: 'dy' as never }), 'ERR_ARGUMENT', 'dy', 'string');
  });

  it('async twins reject with the same errors', async () => {
    await expectRejection(() => ops.loraForwardAsync({ ...fwdInput(), scaling: NaN }), 'ERR_ARGUMENT', 'ops.loraForwardAsync', 'scaling');
    await expectRejection(() => ops.loraBackwardAsync({ ...bwdInput(), A: tensor(new Float32Array(I * 3), [I, 3]) }), 'ERR_SHAPE', 'A', 'r = 2', 'r = 3');
  });

  it('a non-boolean fused / inputGrad is ERR_ARGUMENT ', () => {
    expectError(() => ops.loraForward({ ...fwdInput(), fused: 'no' as never }), 'ERR_ARGUMENT', 'fused');
  });

  it('a valid call after the refused ones gives the same result as before them', () => {
    const first = ops.loraForward(fwdInput()).y.dataSync();
    for (const bad of [{ scaling: NaN }, { B: undefined }, { A: new Float64Array(I * r) }]) {
      expect(() => ops.loraForward({ ...fwdInput(), ...bad } as never)).toThrow(LoraError);
    }
    expectSameBits(ops.loraForward(fwdInput()).y.dataSync(), first);
  });
});

// ------------------------------------------------------------------------------------------------
describe('the native second line (the addon called directly)', () => {
  // Arguments that the addon accepts, to break one field at a time.
  const fwdArgs = () => ({
    M, I, O, r, x: X0(), W: W0(), bias: b0(), A: A0(), B: B0(), scaling: 1, fused: true,
    s: new Float32Array(M * r), y: new Float32Array(M * O),
  });
  const bwdArgs = () => ({
    M, I, O, r, x: X0(), s: new Float32Array(M * r), dy: DY0(), W: W0(), A: A0(), B: B0(), scaling: 1, fused: true,
    ds: new Float32Array(M * r), dx: new Float32Array(M * I), dA: new Float32Array(I * r), dB: new Float32Array(r * O),
    accumulate: false,
  });
  const gemmArgs = () => ({
    transA: false, transB: true, M, N: O, K: I, alpha: 1, A: X0(), lda: I, B: W0(), ldb: I, beta: 0,
    C: new Float32Array(M * O), ldc: O,
  });
  const mergeArgs = () => ({ W: W0(), A: A0(), B: B0(), I, O, r, scaling: 1, sign: 1 as const });

  it('the baseline arguments are accepted (so each refusal below is due to the one broken field)', () => {
    expect(() => native.loraForward(fwdArgs())).not.toThrow();
    expect(() => native.loraBackward(bwdArgs())).not.toThrow();
    expect(() => native.gemm(gemmArgs())).not.toThrow();
    expect(native.merge(mergeArgs())).toBe(true);
  });

  it('loraForward: too-short buffers are ERR_SHAPE naming the buffer, the need and the length', () => {
    expectError(() => native.loraForward({ ...fwdArgs(), x: new Float32Array(M * I - 1) }), 'ERR_SHAPE', 'loraForward', 'x', '20', '19');
    expectError(() => native.loraForward({ ...fwdArgs(), W: new Float32Array(O * I - 1) }), 'ERR_SHAPE', 'W', '15', '14');
    expectError(() => native.loraForward({ ...fwdArgs(), y: new Float32Array(M * O - 1) }), 'ERR_SHAPE', 'y', '12', '11');
    expectError(() => native.loraForward({ ...fwdArgs(), s: new Float32Array(0) }), 'ERR_SHAPE', 's', '8', '0');
    expectError(() => native.loraForward({ ...fwdArgs(), bias: new Float32Array(O - 1) }), 'ERR_SHAPE', 'bias', '3', '2');
  });

  it('loraForward: a Float64Array (or a missing buffer) is ERR_DTYPE naming the buffer and the type', () => {
    expectError(() => native.loraForward({ ...fwdArgs(), A: new Float64Array(I * r) as never }), 'ERR_DTYPE', 'loraForward', 'A', 'Float64Array');
    expectError(() => native.loraForward({ ...fwdArgs(), x: Array.from(X0()) as never }), 'ERR_DTYPE', 'x', 'Array');
    expectError(() => native.loraForward({ ...fwdArgs(), B: undefined as never }), 'ERR_DTYPE', 'B', 'undefined');
  });

  it('loraForward: a negative or non-integer dimension is ERR_SHAPE naming it; rank 0 is ERR_SHAPE', () => {
    expectError(() => native.loraForward({ ...fwdArgs(), M: -1 }), 'ERR_SHAPE', 'loraForward', 'M', '-1');
    expectError(() => native.loraForward({ ...fwdArgs(), M: 1.5 }), 'ERR_SHAPE', 'M', '1.5');
    expectError(() => native.loraForward({ ...fwdArgs(), I: NaN }), 'ERR_SHAPE', 'I');
    expectError(() => native.loraForward({ ...fwdArgs(), O: '3' as never }), 'ERR_SHAPE', 'O', 'string');
    expectError(() => native.loraForward({ ...fwdArgs(), r: 0 }), 'ERR_SHAPE', 'r', '0');
  });

  it('loraForward: dropoutP = 1 (or negative, or NaN) and a non-finite scaling are ERR_ARGUMENT', () => {
    const drop = { seed: 1, step: 0, mask: new Uint8Array(M * I), xDrop: new Float32Array(M * I) };
    expectError(() => native.loraForward({ ...fwdArgs(), ...drop, dropoutP: 1 }), 'ERR_ARGUMENT', 'loraForward', 'dropoutP', '1');
    expectError(() => native.loraForward({ ...fwdArgs(), ...drop, dropoutP: -0.5 }), 'ERR_ARGUMENT', 'dropoutP', '-0.5');
    expectError(() => native.loraForward({ ...fwdArgs(), ...drop, dropoutP: NaN }), 'ERR_ARGUMENT', 'dropoutP');
    expectError(() => native.loraForward({ ...fwdArgs(), scaling: Infinity }), 'ERR_ARGUMENT', 'scaling');
    expectError(() => native.loraForward({ ...fwdArgs(), fused: 'yes' as never }), 'ERR_ARGUMENT', 'fused', 'string');
    // With dropout on, the mask must be a Uint8Array of M·I bytes and the seed an integer.
    expectError(() => native.loraForward({ ...fwdArgs(), ...drop, dropoutP: 0.5, mask: new Uint8Array(M * I - 1) }), 'ERR_SHAPE', 'mask');
    expectError(() => native.loraForward({ ...fwdArgs(), ...drop, dropoutP: 0.5, mask: new Float32Array(M * I) as never }), 'ERR_DTYPE', 'mask', 'Float32Array');
    expectError(() => native.loraForward({ ...fwdArgs(), ...drop, dropoutP: 0.5, seed: -1 }), 'ERR_ARGUMENT', 'seed');
  });

  it('loraForward: a refused call writes nothing into y or s', () => {
    const a = { ...fwdArgs(), x: new Float32Array(M * I - 1) };
    a.y.fill(7);
    a.s.fill(7);
    expectError(() => native.loraForward(a), 'ERR_SHAPE', 'x');
    expect(a.y.every((v) => v === 7)).toBe(true);
    expect(a.s.every((v) => v === 7)).toBe(true);
  });

  it('loraBackward: too-short, wrongly typed and badly dimensioned arguments are refused', () => {
    expectError(() => native.loraBackward({ ...bwdArgs(), dy: new Float32Array(M * O - 1) }), 'ERR_SHAPE', 'loraBackward', 'dy', '12', '11');
    expectError(() => native.loraBackward({ ...bwdArgs(), dA: new Float32Array(I * r - 1) }), 'ERR_SHAPE', 'dA', '10', '9');
    expectError(() => native.loraBackward({ ...bwdArgs(), dx: new Float32Array(1) }), 'ERR_SHAPE', 'dx', '20', '1');
    expectError(() => native.loraBackward({ ...bwdArgs(), s: new Float64Array(M * r) as never }), 'ERR_DTYPE', 's', 'Float64Array');
    expectError(() => native.loraBackward({ ...bwdArgs(), M: -4 }), 'ERR_SHAPE', 'M', '-4');
    expectError(() => native.loraBackward({ ...bwdArgs(), r: 2.5 }), 'ERR_SHAPE', 'r', '2.5');
    expectError(() => native.loraBackward({ ...bwdArgs(), dropoutP: 1 }), 'ERR_ARGUMENT', 'dropoutP', '1');
    expectError(() => native.loraBackward({ ...bwdArgs(), accumulate: 1 as never }), 'ERR_ARGUMENT', 'accumulate');
  });

  it('gemm: too-short buffers, leading dimensions below the width, Float64Array and bad dims are refused', () => {
    expectError(() => native.gemm({ ...gemmArgs(), C: new Float32Array(M * O - 1) }), 'ERR_SHAPE', 'gemm', 'C', '12', '11');
    expectError(() => native.gemm({ ...gemmArgs(), A: new Float32Array(M * I - 2) }), 'ERR_SHAPE', 'A', '20', '18');
    expectError(() => native.gemm({ ...gemmArgs(), lda: I - 1 }), 'ERR_SHAPE', 'lda >= 5');
    expectError(() => native.gemm({ ...gemmArgs(), ldc: O - 1 }), 'ERR_SHAPE', 'ldc >= 3');
    expectError(() => native.gemm({ ...gemmArgs(), B: new Float64Array(O * I) as never }), 'ERR_DTYPE', 'B', 'Float64Array');
    expectError(() => native.gemm({ ...gemmArgs(), M: -1 }), 'ERR_SHAPE', 'M', '-1');
    expectError(() => native.gemm({ ...gemmArgs(), K: 0.5 }), 'ERR_SHAPE', 'K', '0.5');
    expectError(() => native.gemm({ ...gemmArgs(), alpha: NaN }), 'ERR_ARGUMENT', 'alpha');
    expectError(() => native.gemm({ ...gemmArgs(), backend: 'cuda' as never }), 'ERR_BACKEND', 'backend', 'cuda');
    expectError(() => (native.gemm as (a?: unknown) => void)(), 'ERR_ARGUMENT', 'gemm');
  });

  it('merge: too-short buffers, Float64Array and bad dims are refused, and W is left alone', () => {
    const a = mergeArgs();
    const before = a.W.slice();
    expectError(() => native.merge({ ...a, B: new Float32Array(r * O - 1) }), 'ERR_SHAPE', 'merge', 'B', '6', '5');
    expectError(() => native.merge({ ...a, W: new Float32Array(O * I - 1) }), 'ERR_SHAPE', 'W', '15', '14');
    expectError(() => native.merge({ ...a, A: new Float64Array(I * r) as never }), 'ERR_DTYPE', 'A', 'Float64Array');
    expectError(() => native.merge({ ...a, r: -2 }), 'ERR_SHAPE', 'r', '-2');
    expectError(() => native.merge({ ...a, I: 1.5 }), 'ERR_SHAPE', 'I', '1.5');
    expectError(() => native.merge({ ...a, scaling: NaN }), 'ERR_ARGUMENT', 'scaling');
    expectError(() => (native.merge as (a: unknown) => boolean)(null), 'ERR_ARGUMENT', 'merge');
    expectSameBits(a.W, before);
  });

  it('the async entry points refuse bad arguments synchronously, with the same errors', () => {
    expectError(() => native.loraForwardAsync({ ...fwdArgs(), x: new Float32Array(1) }), 'ERR_SHAPE', 'loraForward', 'x');
    expectError(() => native.loraBackwardAsync({ ...bwdArgs(), W: new Float64Array(O * I) as never }), 'ERR_DTYPE', 'W');
    expectError(() => native.linearForwardAsync({ M: -1, I, O, x: X0(), W: W0(), y: new Float32Array(M * O) }), 'ERR_SHAPE', 'linearForward', 'M');
    expectError(() => native.linearBackward({ M, I, O, dy: DY0(), W: W0(), dx: new Float32Array(M * I - 1) }), 'ERR_SHAPE', 'linearBackward', 'dx');
  });
});

// ------------------------------------------------------------------------------------------------
describe('survival: the process and the layer after a batch of errors', () => {
  it("a layer's forward and backward after many refused calls equal, bit for bit, those before them", async () => {
    const layer = makeLayer({ checkFinite: true });
    const x = tensor(X0(), [M, I]);
    const dy = tensor(DY0(), [M, O]);
    const yBefore = layer.forward(x).dataSync();
    const dxBefore = layer.backward(dy)!.dataSync();
    const gA = layer.lora.A.grad!.dataSync();
    const gB = layer.lora.B.grad!.dataSync();
    const A = layer.lora.A.dataSync();
    const B = layer.lora.B.dataSync();
    const W = layer.base.weight.dataSync();
    layer.zeroGrad();

    const nanX = X0();
    nanX[3] = NaN;
    const disposed = tensor(X0(), [M, I]);
    disposed.dispose();
    const refusals: Array<() => unknown> = [
      () => layer.forward(tensor(new Float32Array(M * 4), [M, 4])),
      () => layer.forward(new Float64Array(M * I) as never),
      () => layer.forward('x' as never),
      () => layer.forward(nanX),
      () => layer.forward(disposed),
      () => layer.forward(x, { out: zeros([1, 1]) }),
      () => layer.backward(tensor(new Float32Array(O), [1, O])),
      () => layer.backward(new Float32Array(M * I)),
      () => layer.train('no' as never),
      () => new LinearLoRA(layer.base, 0),
      () => new LinearLoRA(layer.base, r, { dropout: 1 }),
      () => setNumThreads(0),
      () => ops.loraForward({ x, weight: layer.base.weight, A: layer.lora.A, B: layer.lora.B, scaling: NaN }),
      () => native.loraForward({ M: -1 } as never),
      () => native.loraBackward({ M, I, O, r, x: new Float32Array(1) } as never),
      () => native.gemm({ M: 1.5 } as never),
      () => native.merge({ W: layer.base.weight.buffer(), A: new Float64Array(I * r), B: layer.lora.B.buffer(), I, O, r, scaling: 1, sign: 1 } as never),
    ];
    for (const call of refusals) expect(call).toThrow(LoraError);
    await expect(layer.forwardAsync(new Float32Array(3))).rejects.toBeInstanceOf(LoraError);
    await expect(layer.backwardAsync(new Float32Array(3))).rejects.toBeInstanceOf(LoraError);

    expectSameBits(layer.base.weight.dataSync(), W);
    expectSameBits(layer.lora.A.dataSync(), A);
    expectSameBits(layer.lora.B.dataSync(), B);
    expect(layer.lora.A.grad!.dataSync().every((v) => v === 0)).toBe(true);  // no refused backward accumulated
    expect(layer.training).toBe(true);
    expectSameBits(layer.forward(x).dataSync(), yBefore);
    expectSameBits(layer.backward(dy)!.dataSync(), dxBefore);
    expectSameBits(layer.lora.A.grad!.dataSync(), gA);
    expectSameBits(layer.lora.B.grad!.dataSync(), gB);
    expectSameBits((await layer.forwardAsync(x)).dataSync(), yBefore);
  });
});
