// The frozen Linear on the device (fake CUDA binding): where it lives, forward and backward against
// the CPU layer on the same (rounded) values, TF32 against exact fp32, the mixed-device and dtype
// rules for its inputs, `out`, and the async twins.
import { describe, expect, it } from 'vitest';
import { Linear, tensor } from '../lib/index';
import { expectCode } from './expect-code';
import { relErr, useFakeCuda } from './fixtures/fake-cuda-env';
import { message } from './expect-code';

const M = 5, I = 7, O = 3;
const seq = (n: number, f: (i: number) => number) => Float32Array.from({ length: n }, (_, i) => f(i));
const W0 = seq(O * I, (i) => 0.4 * Math.sin(i + 1) + 0.01 * i);
const b0 = seq(O, (i) => 0.1 * (i - 1));
const X0 = seq(M * I, (i) => Math.cos(0.7 * i) + 0.001 * i);
const DY0 = seq(M * O, (i) => 0.3 * Math.sin(2 * i + 0.5));

describe('Linear on the device (fake CUDA binding)', () => {
  const fake = useFakeCuda();

  for (const [dtype, math, tol] of [['float32', 'exact', 1e-6], ['float32', 'tf32', 5e-3], ['bfloat16', 'tf32', 2e-2], ['float16', 'tf32', 5e-3]] as const) {
    it(`${dtype} (${math}): forward and backward match the CPU layer on the same rounded values within ${tol}`, () => {
      const dev = new Linear(I, O, { weight: W0, bias: b0, device: 'cuda', dtype, math });
      expect([dev.device, dev.dtype, dev.math, dev.weight.device, dev.weight.dtype, dev.bias!.dtype]).toEqual(['cuda', dtype, math, 'cuda', dtype, dtype]);
      const x = tensor(X0, [M, I], { device: 'cuda', dtype }), dy = tensor(DY0, [M, O], { device: 'cuda', dtype });
      const cpu = new Linear(I, O, { weight: dev.weight.dataSync(), bias: dev.bias!.dataSync() });
      const y = dev.forward(x);
      expect([y.device, y.dtype, ...y.shape]).toEqual(['cuda', dtype, M, O]);
      const e1 = relErr(y.dataSync(), cpu.forward(x.dataSync()).dataSync());
      const e2 = relErr(dev.backward(dy).dataSync(), cpu.backward(dy.dataSync()).dataSync());
      expect(e1).toBeLessThan(tol);
      expect(e2).toBeLessThan(tol);
      if (math === 'tf32') expect(Math.max(e1, e2)).toBeGreaterThan(1e-6);  // the operands were rounded
      expect(fake().calls.filter((c) => c === 'gemm')).toHaveLength(2);
    });
  }

  it('a cuda weight puts the layer on the device and is used as is; host values are uploaded; the default init draws on the host', () => {
    const w = tensor(W0, [O, I], { device: 'cuda', dtype: 'bfloat16' });
    const l = new Linear(I, O, { weight: w });
    expect([l.device, l.dtype]).toEqual(['cuda', 'bfloat16']);
    expect(l.weight).toBe(w);
    const drawn = new Linear(I, O, { seed: 3, bias: true, device: 'cuda' });
    const host = new Linear(I, O, { seed: 3, bias: true });
    expect(drawn.weight.dataSync()).toEqual(host.weight.dataSync());
    expect(drawn.bias!.dataSync()).toEqual(host.bias!.dataSync());
    const back = new Linear(I, O, { weight: w, device: 'cpu' });  // a device weight copied back to the host
    expect([back.device, back.weight.device]).toEqual(['cpu', 'cpu']);
    expect(back.weight.dataSync()).toEqual(w.dataSync());
    const converted = new Linear(I, O, { weight: w, dtype: 'float16' });
    expect(converted.weight.dtype).toBe('float16');
    expect(converted.weight).not.toBe(w);
  });

  it("device 'auto' puts it on the device; a non-finite host weight is refused before any upload", () => {
    expect(new Linear(I, O, { device: 'auto', seed: 1 }).device).toBe('cuda');
    const bad = W0.slice();
    bad[3] = NaN;
    fake().clearCalls();
    expect(message(() => new Linear(I, O, { weight: bad, device: 'cuda' }))).toMatch(/ERR_NOT_FINITE .*options\.weight/);
    expect(fake().calls).toEqual([]);
    expect(message(() => new Linear(I, O, { device: 'cuda', math: 'fast' as 'tf32' }))).toMatch(/ERR_ARGUMENT .*options\.math/);
    expect(message(() => new Linear(I, O, { device: 'cpu', dtype: 'float16' }))).toMatch(/ERR_DTYPE .*options\.dtype/);
  });

  it('inputs must be cuda tensors of the compute dtype: cpu tensors and typed arrays are ERR_DEVICE, another dtype ERR_DTYPE, each naming the argument', () => {
    const l = new Linear(I, O, { weight: W0, device: 'cuda', dtype: 'bfloat16' });
    expect(message(() => l.forward(tensor(X0, [M, I])))).toMatch(/^ERR_DEVICE Linear\.forward: expected a cuda tensor for x .*received a cpu tensor \(float32, shape \[5, 7\]\).*\.to\('cuda', \{ dtype: 'bfloat16' \}\)/);
    expect(message(() => l.forward(X0))).toMatch(/^ERR_DEVICE Linear\.forward: expected a cuda Tensor for x .*Float32Array\(35\), which is host memory/);
    expect(message(() => l.forward(tensor(X0, [M, I], { device: 'cuda' })))).toMatch(/^ERR_DTYPE Linear\.forward: expected a bfloat16 tensor for x .*received a float32 one/);
    expect(message(() => l.backward(tensor(DY0, [M, O])))).toMatch(/^ERR_DEVICE Linear\.backward: expected a cuda tensor for dy/);
    expect(message(() => l.forward(tensor(X0, [I, M], { device: 'cuda', dtype: 'bfloat16' })))).toMatch(/^ERR_SHAPE .*\(\.\.\., 7\) for x/);
    const x = tensor(X0, [M, I], { device: 'cuda', dtype: 'bfloat16' });
    x.dispose();
    expectCode(() => l.forward(x), 'ERR_DISPOSED');
  });

  it('options.out receives the result on the device; it must not be an input', () => {
    const l = new Linear(I, O, { weight: W0, bias: b0, device: 'cuda' });
    const x = tensor(X0, [M, I], { device: 'cuda' });
    const out = tensor(new Float32Array(M * O), [M, O], { device: 'cuda' });
    expect(l.forward(x, { out })).toBe(out);
    expect(out.dataSync()).toEqual(l.forward(x).dataSync());
    const sq = new Linear(I, I, { device: 'cuda', seed: 1 });
    expect(message(() => sq.forward(x, { out: x }))).toMatch(/^ERR_ARGUMENT .*does not share memory with x for options\.out/);
    expect(message(() => l.forward(x, { out: tensor(new Float32Array(M * O), [M, O]) }))).toMatch(/^ERR_DEVICE .*options\.out/);
  });

  it('(batch, tokens, features) inputs keep their leading dimensions', () => {
    const l = new Linear(I, O, { weight: W0, device: 'cuda' });
    const y = l.forward(tensor(X0.subarray(0, 4 * I), [2, 2, I], { device: 'cuda' }));
    expect(y.shape).toEqual([2, 2, O]);
  });

  it('the async twins enqueue, then wait for the device off the JS thread (synchronizeAsync, never the blocking synchronize)', async () => {
    const l = new Linear(I, O, { weight: W0, device: 'cuda' });
    const x = tensor(X0, [M, I], { device: 'cuda' });
    fake().clearCalls();
    const y = await l.forwardAsync(x);
    const dx = await l.backwardAsync(tensor(DY0, [M, O], { device: 'cuda' }));
    expect(y.dataSync()).toEqual(l.forward(x).dataSync());
    expect(dx.shape).toEqual([M, I]);
    expect(fake().count('synchronizeAsync')).toBe(2);
    expect(fake().count('synchronize')).toBe(0);
  });

  it('a cuda x into a CPU Linear is ERR_DEVICE naming x', () => {
    const l = new Linear(I, O, { weight: W0 });
    expect(message(() => l.forward(tensor(X0, [M, I], { device: 'cuda' })))).toMatch(/^ERR_DEVICE Linear\.forward: expected a cpu tensor for x .*received a cuda tensor/);
  });
});
