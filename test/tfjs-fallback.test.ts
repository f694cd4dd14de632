// On a backend without our kernels (webgl, webgpu, tfjs-node's tensorflow, ...) loraLinear computes
// the same function with tfjs's own ops, with the same gradient contract (zeros for the frozen
// kernel and bias), and warns once per backend. Stood in for here by a backend of another name
// that has every cpu kernel except ours.
import { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import * as tfl from '@tensorflow/tfjs-layers';
import { describe, expect, it, vi } from 'vitest';
import { FORWARD_KERNEL, GRADIENT_KERNEL, loraLinear, LoRADense } from '../lib/tfjs/index';
import { FORWARD_RELU_KERNEL } from '../lib/tfjs/kernels';
import { randomArray, relErr } from './reference';
import { composition, makeCase, Outcome, outcome, tf, use } from './tfjs-setup';

const OTHER = 'other';
tf.registerBackend(OTHER, () => new MathBackendCPU());
for (const k of tf.getKernelsForBackend('cpu')) {
  if (![FORWARD_KERNEL, FORWARD_RELU_KERNEL, GRADIENT_KERNEL].includes(k.kernelName)) tf.registerKernel({ ...k, backendName: OTHER });
}

describe('loraLinear on a backend without the fused kernels', () => {
  it("computes tfjs's composition and its gradients, and warns once, naming the backend and where the fused kernels run", async () => {
    const warn = vi.spyOn(process, 'emitWarning').mockImplementation(() => {});
    const c = makeCase([3, 2], 17, 9, 3, 4);
    await use('cpu');
    const want = outcome(c, composition);
    expect(await tf.setBackend(OTHER)).toBe(true);
    const got = outcome(c, (x, kernel, bias, A, B, scaling) => loraLinear(x, kernel, bias, A, B, { scaling }));
    outcome(c, (x, kernel, bias, A, B, scaling) => loraLinear(x, kernel, bias, A, B, { scaling }));
    for (const k of ['y', 'dx', 'dA', 'dB'] as Array<keyof Outcome>) expect(relErr(got[k], want[k]), k).toBeLessThan(1e-6);
    expect(warn).toHaveBeenCalledTimes(1);
    expect(String(warn.mock.calls[0][0])).toMatch(/the 'other' backend has no fused LoRA kernel; loraLinear runs tfjs's own ops there .* The fused kernels run on 'cpu' and 'wasm'/);
    expect(warn.mock.calls[0][1]).toEqual({ code: 'FUSED_LORA_TFJS_FALLBACK' });
    warn.mockRestore();
  });

  it("computes activation 'relu' as tf.relu over the composition, its gradient through it", async () => {
    const warn = vi.spyOn(process, 'emitWarning').mockImplementation(() => {});
    const c = makeCase([7], 13, 10, 2, 9);
    await use('cpu');
    const want = outcome(c, (...args) => tf.relu(composition(...args)));
    expect(await tf.setBackend(OTHER)).toBe(true);
    const got = outcome(c, (x, kernel, bias, A, B, scaling) => loraLinear(x, kernel, bias, A, B, { scaling, activation: 'relu' }));
    expect(got.y.some((v) => v === 0) && got.y.some((v) => v > 0)).toBe(true);
    for (const k of ['y', 'dx', 'dA', 'dB'] as Array<keyof Outcome>) expect(relErr(got[k], want[k]), k).toBeLessThan(1e-6);
    warn.mockRestore();
  });

  it('keeps the contract: zeros for the kernel and the bias; dropout in the LoRA path only, a mask per (seed, step)', async () => {
    await tf.setBackend(OTHER);
    const c = makeCase([5], 8, 4, 2, 6);
    const [x, kernel, bias, A, B] = [tf.tensor(c.x, [5, 8]), tf.tensor(c.kernel, [8, 4]), tf.tensor(c.bias!, [4]), tf.tensor(c.A, [8, 2]), tf.tensor(c.B, [2, 4])];
    const f = (k: tf.Tensor, b: tf.Tensor, Av: tf.Tensor) => tf.sum(tf.square(loraLinear(x, k, b, Av, B, { scaling: 1 })));
    const [dk, db, dA] = tf.grads(f)([kernel, bias, A]);
    expect(dk.dataSync().every((v) => v === 0) && db.dataSync().every((v) => v === 0)).toBe(true);
    expect(dA.dataSync().some((v) => v !== 0)).toBe(true);
    const drop = (seed: number, step: number) => loraLinear(x, kernel, bias, A, B, { scaling: 1, dropout: 0.5, seed, step }).dataSync();
    const plain = loraLinear(x, kernel, bias, A, B, { scaling: 1 }).dataSync();
    expect(drop(3, 0)).toEqual(drop(3, 0));
    expect(relErr(drop(3, 0), plain)).toBeGreaterThan(1e-3);
    expect(relErr(drop(3, 1), drop(3, 0))).toBeGreaterThan(1e-3);
    // With B = 0 the LoRA path adds nothing: dropout leaves the frozen path alone.
    const B0 = tf.zeros([2, 4]);
    expect(loraLinear(x, kernel, bias, A, B0, { scaling: 1, dropout: 0.5, seed: 3 }).dataSync()).toEqual(loraLinear(x, kernel, bias, A, B0, { scaling: 1 }).dataSync());
  });

  it('so a LoRADense model trained on wasm predicts the same there', async () => {
    await use('wasm');
    const layer = new LoRADense({ layer: tfl.layers.dense({ units: 6, inputShape: [10], activation: 'relu' }), rank: 2, seed: 1 });
    const model = tfl.sequential({ layers: [layer] });
    layer.loraB!.write(tf.tensor(randomArray(12, 2), [2, 6]));
    const x = randomArray(4 * 10, 3);
    const here = (model.predict(tf.tensor(x, [4, 10])) as tf.Tensor).dataSync();
    await tf.setBackend(OTHER);
    const there = (model.predict(tf.tensor(x, [4, 10])) as tf.Tensor).dataSync();
    expect(relErr(there, here)).toBeLessThan(1e-6);
  });
});
