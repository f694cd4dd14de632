// loraLinear: the fused LoRA layer as a tfjs op, y = x·kernel + bias + scaling·(x̃·A)·B (then a ReLU
// when asked), in tfjs's
// layouts: x (..., I) (rank >= 2, the leading dimensions flattened to M rows), kernel (I, O) as
// tf.layers.dense keeps it, bias (O) or null, A (I, r), B (r, O). Every argument is checked here,
// before tfjs records or allocates anything, so a refused call leaves tfjs as it was.
import type { Tensor } from '@tensorflow/tfjs-core';
import { fail, said } from '../errors';
import { randomSeed } from '../random';
import { checkDropout, checkFiniteNumber, checkOptions, checkSeed, optionKeys, shapeString } from '../validate';
import { composed } from './fallback';
import { forwardKernelOf, FUSED_ACTIVATIONS, LoRAActivation, LoRAAttrs } from './kernels';
import { FUSED_BACKENDS } from './memory';
import { tf } from './peer';

export interface LoraLinearOptions {
  /** alpha / r (or alpha / √r with rsLoRA). */
  scaling: number;
  /** Dropout on the LoRA path's input, in [0, 1); default 0. Apply it in training only. */
  dropout?: number;
  /** The dropout mask's seed (default: a new random one per call) ... */
  seed?: number;
  /** ... and step: the mask is a function of (seed, step, element), so vary one per call. Default 0. */
  step?: number;
  /** The activation after the layer, computed with it (forward and gradient): 'linear' (default, none) or 'relu'. */
  activation?: LoRAActivation;
}
const OPTION_KEYS = optionKeys<LoraLinearOptions>({ scaling: true, dropout: true, seed: true, step: true, activation: true });

function checkActivation(where: string, v: unknown): LoRAActivation {
  if (typeof v === 'string' && (FUSED_ACTIVATIONS as readonly string[]).includes(v)) return v as LoRAActivation;
  return fail('ERR_ARGUMENT', where, 'options.activation', `one of ${FUSED_ACTIVATIONS.map((a) => `'${a}'`).join(', ')}`, v);
}

/** A live float32 tf.Tensor, or ERR_ARGUMENT / ERR_DISPOSED / ERR_DTYPE naming it. */
function tfTensor(where: string, arg: string, v: unknown): Tensor {
  if (!(v instanceof tf.Tensor)) fail('ERR_ARGUMENT', where, arg, 'a tf.Tensor', v);
  if (v.isDisposed) fail('ERR_DISPOSED', where, arg, 'a live tensor', said(`a disposed one (shape ${shapeString(v.shape)})`));
  if (v.dtype !== 'float32') {
    const an = /^[aeiou]/.test(v.dtype) ? 'an' : 'a';
    fail('ERR_DTYPE', where, arg, 'a float32 tensor', said(`${an} ${v.dtype} one (shape ${shapeString(v.shape)})`), "cast it with tf.cast(t, 'float32')");
  }
  return v;
}

function checkShape(where: string, arg: string, t: Tensor, expected: number[], layout: string): void {
  if (t.shape.length !== expected.length || t.shape.some((d, i) => d !== expected[i])) {
    fail('ERR_SHAPE', where, arg, `shape ${shapeString(expected)}, ${layout}`, said(`shape ${shapeString(t.shape)}`));
  }
}

/**
 * y (..., O) for x (..., I). Differentiable in x, A and B (one fused backward); the kernel and the
 * bias are frozen: their gradients are zeros (gradient.ts). Fused on the cpu and wasm backends;
 * elsewhere tfjs's own ops compute the same, with a warning (fallback.ts).
 */
export function loraLinear(x: Tensor, kernel: Tensor, bias: Tensor | null, A: Tensor, B: Tensor, options: LoraLinearOptions): Tensor {
  const where = 'loraLinear';
  tfTensor(where, 'x', x);
  tfTensor(where, 'kernel', kernel);
  if (bias !== null && bias !== undefined) tfTensor(where, 'bias', bias);
  tfTensor(where, 'A', A);
  tfTensor(where, 'B', B);
  if (x.rank < 2) fail('ERR_SHAPE', where, 'x', 'a tensor of rank >= 2 (..., I)', said(`shape ${shapeString(x.shape)}`));
  const xShape = x.shape as number[], kShape = kernel.shape as number[], aShape = A.shape as number[];
  const I = xShape[x.rank - 1];
  if (kernel.rank !== 2 || kShape[0] !== I) {
    fail('ERR_SHAPE', where, 'kernel', `shape [${I}, O], (I, O) as tf.layers.dense keeps it (I = ${I} from x)`, said(`shape ${shapeString(kernel.shape)}`));
  }
  const O = kShape[1];
  if (A.rank !== 2 || aShape[0] !== I || aShape[1] < 1) fail('ERR_SHAPE', where, 'A', `shape [${I}, r], (I, r) with r >= 1`, said(`shape ${shapeString(A.shape)}`));
  const r = aShape[1];
  checkShape(where, 'B', B, [r, O], `(r, O) (r = ${r} from A, O = ${O} from kernel)`);
  if (bias) checkShape(where, 'bias', bias, [O], `(O) (O = ${O} from kernel)`);

  const opts = checkOptions(where, options, OPTION_KEYS);
  const scaling = checkFiniteNumber(where, 'options.scaling', opts.scaling);
  const dropout = opts.dropout === undefined ? 0 : checkDropout(where, opts.dropout);
  const seed = opts.seed === undefined ? randomSeed() : checkSeed(where, opts.seed);
  const step = opts.step === undefined ? 0 : checkSeed(where, opts.step);
  const activation = opts.activation === undefined ? 'linear' : checkActivation(where, opts.activation);
  // As the kernels see it: a p whose float32 is 0 is no dropout.
  const p = Math.fround(dropout) > 0 ? dropout : 0;

  const backendName = tf.getBackend();
  if (!FUSED_BACKENDS.includes(backendName)) return composed(backendName, { x, kernel, bias: bias ?? null, A, B, scaling, dropout: p, seed, step, activation });
  const attrs: LoRAAttrs = { scaling, dropout: p, seed, step, activation };
  const [y, ...saved] = tf.engine().runKernel(forwardKernelOf(activation), bias ? { x, kernel, bias, A, B } : { x, kernel, A, B }, attrs) as Tensor[];
  // s (and x̃, the mask) live on in tfjs's saved tensors when a gradient is being recorded.
  for (const t of saved) t.dispose();
  return y;
}
