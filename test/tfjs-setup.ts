// The tfjs suites' common ground: tfjs-core with its cpu and wasm backends (the wasm binaries load
// from the package's own dist folder in Node), fused-lora/tfjs from the sources, and the reference
// every fused result is held to: tfjs's own composition on the cpu backend.
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
import { loraLinear } from '../lib/tfjs/index';
import { randomArray } from './reference';

export { tf };

export type BackendName = 'cpu' | 'wasm';
export const BACKENDS: BackendName[] = ['cpu', 'wasm'];

/**
 * tfjs's own test mode: the engine checks that no kernel leaves data behind it did not return. The
 * op suites turn it on; tfjs's fused matMul gradient on wasm trips it by itself (4 data ids after
 * 'fusedMatMul__op' in a plain Dense model), so the suites that train models leave it off.
 */
export function checkKernelLeaks(): void {
  tf.env().set('IS_TEST', true);
}

export async function use(backend: BackendName): Promise<void> {
  if (!(await tf.setBackend(backend))) throw new Error(`tfjs backend ${backend} did not initialise`);
  await tf.ready();
}

export interface Case {
  x: Float32Array; xShape: number[];
  kernel: Float32Array; bias: Float32Array | null; A: Float32Array; B: Float32Array;
  I: number; O: number; r: number; scaling: number;
  /** dL/dy of the loss sum(y ⊙ G): a random G, so every gradient is a real product. */
  G: Float32Array;
}

/** A layer and a batch: kernel (I, O), A ~ U(±1/√I), B nonzero (so the LoRA path counts). */
export function makeCase(lead: number[], I: number, O: number, r: number, seed: number, withBias = true): Case {
  const M = lead.reduce((a, b) => a * b, 1);
  return {
    x: randomArray(M * I, seed + 1), xShape: [...lead, I],
    kernel: randomArray(I * O, seed + 2, 1 / Math.sqrt(I)), bias: withBias ? randomArray(O, seed + 3) : null,
    A: randomArray(I * r, seed + 4, 1 / Math.sqrt(I)), B: randomArray(r * O, seed + 5), I, O, r, scaling: 16 / r,
    G: randomArray(M * O, seed + 6),
  };
}

export interface Outcome {
  y: Float32Array; dx: Float32Array; dA: Float32Array; dB: Float32Array;
}

type Compute = (x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | null, A: tf.Tensor, B: tf.Tensor, scaling: number) => tf.Tensor;

/** tfjs's own composition: x·kernel + bias + scaling·(x·A)·B, leading dimensions flattened. */
export const composition: Compute = (x, kernel, bias, A, B, scaling) => {
  const [I, O] = kernel.shape;
  const x2 = tf.reshape(x, [-1, I]);
  let y = tf.add(tf.matMul(x2, kernel), tf.mul(tf.matMul(tf.matMul(x2, A), B), scaling));
  if (bias) y = tf.add(y, bias);
  return tf.reshape(y, [...x.shape.slice(0, -1), O]);
};

export const fused: Compute = (x, kernel, bias, A, B, scaling) => loraLinear(x, kernel, bias, A, B, { scaling });

/** y and the gradients of sum(y ⊙ G) in x, A and B, on the current backend, as host arrays. */
export function outcome(c: Case, compute: Compute): Outcome {
  let out: Outcome | null = null;
  tf.tidy(() => {
    const x = tf.tensor(c.x, c.xShape), kernel = tf.tensor(c.kernel, [c.I, c.O]), bias = c.bias ? tf.tensor(c.bias, [c.O]) : null;
    const A = tf.tensor(c.A, [c.I, c.r]), B = tf.tensor(c.B, [c.r, c.O]);
    const G = tf.tensor(c.G, [...c.xShape.slice(0, -1), c.O]);
    const f = (xv: tf.Tensor, Av: tf.Tensor, Bv: tf.Tensor) => compute(xv, kernel, bias, Av, Bv, c.scaling);
    const y = f(x, A, B);
    const [dx, dA, dB] = tf.grads((xv: tf.Tensor, Av: tf.Tensor, Bv: tf.Tensor) => tf.sum(tf.mul(f(xv, Av, Bv), G)))([x, A, B]);
    out = { y: y.dataSync() as Float32Array, dx: dx.dataSync() as Float32Array, dA: dA.dataSync() as Float32Array, dB: dB.dataSync() as Float32Array };
  });
  return out!;
}

/**
 * Fills free wasm heap with NaN: a block malloc hands out next is then likely NaN until written, as
 * our kernels' outputs must be whole (on the cpu backend they start as zeros, which a missed element
 * shows against nonzero expected values).
 */
export function poisonHeap(elements: number): void {
  if (tf.getBackend() === 'wasm') tf.fill([elements], NaN).dispose();
}
