// The fused LoRA kernels of tfjs's cpu and wasm backends: each one call of ops.loraForward /
// ops.loraBackward on the tensors' own memory (memory.ts), in tfjs's layouts: x (..., I) with its
// leading dimensions as M rows, the kernel (I, O) as tf.layers.dense keeps it (read in place:
// fanInFanOut), bias (O), A (I, r), B (r, O). The op (op.ts) has checked every input first.
//
// Forward outputs [y, s] or, with dropout, [y, s, xDrop, mask]: what backward needs stays in the
// op's outputs (tfjs saves them for the gradient), never in this module. The gradient kernel takes
// them back and outputs [dA, dB] or [dA, dB, dx].
//
// A ReLU after the layer (tf.layers.dense's activation 'relu') runs here, not as tfjs ops: in place
// on y after the fused forward, and in backward as dy masked where y > 0 before the fused backward.
// On the cpu backend tfjs's own Relu, and its gradient's Step and Multiply, cost about 28 ms of a
// 512 × 1024 layer's step, more than the fused backward itself (bench/NOTES.md); ours is one pass
// each. Masking where y > 0 is masking where x·kernel + ... > 0: ReLU keeps exactly the positives.
import type { KernelFunc, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs-core';
import type { Operand } from '../backends/backend';
import { backendFor, HOST } from '../backends/registry';
import { operand } from '../operands';
import { loraBackward, loraForward } from '../ops';
import { Tensor } from '../tensor';
import { BackendMemory, FUSED_BACKENDS, memoryOf } from './memory';
import { tf } from './peer';

export const FORWARD_KERNEL = 'FusedLoRALinear';
/**
 * The same forward with the ReLU: a kernel of its own name, because tfjs saves a kernel's outputs
 * for its gradient by a list fixed per kernel name, and only this one needs y saved (on wasm every
 * saved tensor is copied by tfjs's engine, so the linear kernel must not save y).
 */
export const FORWARD_RELU_KERNEL = 'FusedLoRALinearReLU';
export const GRADIENT_KERNEL = 'FusedLoRALinearGrad';

/** Attributes of both kernels. */
export interface LoRAAttrs extends NamedAttrMap {
  scaling: number;
  /** Dropout on the LoRA path (0: none), its mask drawn from (seed, step). */
  dropout: number;
  seed: number;
  step: number;
  /** The activation after the layer: 'linear' (none) or 'relu', applied by the kernels. */
  activation: LoRAActivation;
}

/** The activations the kernels apply themselves; any other stays a tfjs op after the layer. */
export type LoRAActivation = 'linear' | 'relu';
export const FUSED_ACTIVATIONS: readonly LoRAActivation[] = ['linear', 'relu'];
export const forwardKernelOf = (activation: LoRAActivation): string => (activation === 'relu' ? FORWARD_RELU_KERNEL : FORWARD_KERNEL);

// The host's elementwise ReLU kernels (native, multithreaded) over the backend's own memory.
const hostOperand = (values: Float32Array): Operand => operand('fused-lora/tfjs', 'y', values, HOST);
function reluInPlace(y: Float32Array): void {
  const o = hostOperand(y);
  backendFor(HOST).activations!.forward('relu', o, o);
}
/** dz = dy where y > 0, else 0: the gradient through the ReLU (0 at 0, as tfjs's Step gives). */
function reluBackward(y: Float32Array, dy: Float32Array, dz: Float32Array): void {
  backendFor(HOST).activations!.backward('relu', hostOperand(y), hostOperand(dy), hostOperand(dz));
}

function dimsOf(x: TensorInfo, kernel: TensorInfo, A: TensorInfo) {
  const [I, O] = kernel.shape, r = A.shape[1];
  return { M: tf.util.sizeFromShape(x.shape) / I, I, O, r };
}

type Shapes = Array<[number[], 'float32' | 'bool']>;

/**
 * Allocates the outputs and the scratch tensors, then runs `body` on views taken after the last
 * allocation; frees the scratch always, the outputs if it throws.
 */
function withOutputs(mem: BackendMemory, outputs: Shapes, scratch: Shapes, body: (outs: TensorInfo[], scratch: TensorInfo[]) => void): TensorInfo[] {
  const outs: TensorInfo[] = [], temps: TensorInfo[] = [];
  try {
    for (const [shape, dtype] of outputs) outs.push(mem.output(shape, dtype));
    for (const [shape, dtype] of scratch) temps.push(mem.output(shape, dtype));
    body(outs, temps);
    return outs;
  } catch (e) {
    for (const t of outs) mem.release(t);
    throw e;
  } finally {
    for (const t of temps) mem.release(t);
  }
}

const wrap = (mem: BackendMemory, t: TensorInfo, shape: number[]) => new Tensor(mem.floats(t), shape);

function forward(mem: BackendMemory, inputs: NamedTensorInfoMap, attrs: LoRAAttrs): TensorInfo[] {
  const { x, kernel, bias, A, B } = inputs as Record<string, TensorInfo>;
  const { M, I, O, r } = dimsOf(x, kernel, A);
  const p = attrs.dropout;
  const shapes: Shapes = [[[...x.shape.slice(0, -1), O], 'float32'], [[M, r], 'float32']];
  if (p > 0) shapes.push([x.shape, 'float32'], [x.shape, 'bool']);
  return withOutputs(mem, shapes, [], ([y, s, xDrop, mask]) => {
    loraForward({
      x: mem.floats(x), weight: mem.floats(kernel), bias: bias ? mem.floats(bias) : null, A: mem.floats(A), B: mem.floats(B),
      M, I, O, r, scaling: attrs.scaling, fanInFanOut: true,
      dropout: p > 0 ? { p, seed: attrs.seed, step: attrs.step } : undefined,
      out: { y: wrap(mem, y, [M, O]), s: wrap(mem, s, [M, r]), ...(p > 0 ? { xDrop: wrap(mem, xDrop, [M, I]), mask: mem.bytes(mask) } : {}) },
    });
    if (attrs.activation === 'relu') reluInPlace(mem.floats(y));
  });
}

function gradient(mem: BackendMemory, inputs: NamedTensorInfoMap, attrs: LoRAAttrs & { inputGrad: boolean }): TensorInfo[] {
  const { dy, x, kernel, A, B, y, s, xDrop, mask } = inputs as Record<string, TensorInfo>;
  const { M, I, O, r } = dimsOf(x, kernel, A);
  const p = attrs.dropout;
  const relu = attrs.activation === 'relu';
  const shapes: Shapes = [[[I, r], 'float32'], [[r, O], 'float32']];
  if (attrs.inputGrad) shapes.push([x.shape, 'float32']);
  // Through the ReLU, the fused backward takes dy masked where y > 0: a scratch tensor of dy's
  // shape, as dy is tfjs's (another op may read it) and cannot be masked in place.
  return withOutputs(mem, shapes, relu ? [[dy.shape, 'float32']] : [], ([dA, dB, dx], [dz]) => {
    if (relu) reluBackward(mem.floats(y), mem.floats(dy), mem.floats(dz));
    loraBackward({
      x: mem.floats(x), s: mem.floats(s), dy: mem.floats(relu ? dz : dy), weight: mem.floats(kernel), A: mem.floats(A), B: mem.floats(B),
      M, I, O, r, scaling: attrs.scaling, fanInFanOut: true, inputGrad: attrs.inputGrad,
      dropout: p > 0 ? { p, mask: mem.bytes(mask), xDrop: mem.floats(xDrop) } : undefined,
      out: { dA: wrap(mem, dA, [I, r]), dB: wrap(mem, dB, [r, O]), ...(attrs.inputGrad ? { dx: wrap(mem, dx, [M, I]) } : {}) },
    });
  });
}

/** Registers both kernels for the cpu and wasm backends (once: a second copy of this module leaves them be). */
export function registerKernels(): void {
  for (const backendName of FUSED_BACKENDS) {
    const kernels: Array<[string, KernelFunc]> = [
      [FORWARD_KERNEL, ({ inputs, backend, attrs }) => forward(memoryOf(backendName, backend), inputs, attrs as LoRAAttrs)],
      [FORWARD_RELU_KERNEL, ({ inputs, backend, attrs }) => forward(memoryOf(backendName, backend), inputs, attrs as LoRAAttrs)],
      [GRADIENT_KERNEL, ({ inputs, backend, attrs }) => gradient(memoryOf(backendName, backend), inputs, attrs as LoRAAttrs & { inputGrad: boolean })],
    ];
    for (const [kernelName, kernelFunc] of kernels) {
      if (tf.getKernel(kernelName, backendName) === undefined) tf.registerKernel({ kernelName, backendName, kernelFunc });
    }
  }
}
