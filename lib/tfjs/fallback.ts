// loraLinear on a backend without our kernels (webgl, webgpu, tfjs-node's tensorflow, or any other):
// the same function and the same gradient contract (dx, dA, dB; zeros for the frozen kernel and
// bias) from tfjs's own ops, with one warning per backend saying where the fused kernels run. A
// model with LoRADense layers keeps working wherever tfjs runs; it is fast only on cpu and wasm.
//
// Not an error: a LoRADense model trained here is often run elsewhere (loaded under tfjs-node, or
// in a browser), and its layer must compute there as any other layer does.
import type { Tensor } from '@tensorflow/tfjs-core';
import { Random } from '../random';
import type { LoRAActivation } from './kernels';
import { FUSED_BACKENDS } from './memory';
import { tf } from './peer';

const warned = new Set<string>();

function warnOnce(backendName: string): void {
  if (warned.has(backendName)) return;
  warned.add(backendName);
  process.emitWarning(
    `fused-lora/tfjs: the '${backendName}' backend has no fused LoRA kernel; loraLinear runs tfjs's own ops there (the same result, without the speed). ` +
    `The fused kernels run on ${FUSED_BACKENDS.map((b) => `'${b}'`).join(' and ')}: tf.setBackend('wasm') or tf.setBackend('cpu').`,
    { code: 'FUSED_LORA_TFJS_FALLBACK' },
  );
}

export interface Composed {
  x: Tensor; kernel: Tensor; bias: Tensor | null; A: Tensor; B: Tensor;
  scaling: number;
  /** Dropout on the LoRA path (0: none); its mask here comes from tfjs's own generator, seeded by (seed, step). */
  dropout: number;
  seed: number;
  step: number;
  activation: LoRAActivation;
}

/** y = x·kernel + bias + scaling·(x̃·A)·B (then the ReLU, when asked) in tfjs ops, with the fused op's gradient. */
export function composed(backendName: string, c: Composed): Tensor {
  warnOnce(backendName);
  const [I, O] = c.kernel.shape;
  const lead = c.x.shape.slice(0, -1);
  const f = tf.customGrad((...args) => {
    const [x, kernel, A, B] = args as Tensor[];
    const save = args[args.length - 1] as (t: Tensor[]) => void;
    const x2 = tf.reshape(x, [-1, I]);
    // keep (M, I): 0, or 1 / (1 − p) where the input is kept
    const maskSeed = new Random(c.seed + c.step).nextUint32();
    const keep = c.dropout > 0 ? tf.div(tf.cast(tf.greaterEqual(tf.randomUniform(x2.shape, 0, 1, 'float32', maskSeed), c.dropout), 'float32'), 1 - c.dropout) : null;
    const xd = keep ? tf.mul(x2, keep) : x2;
    const s = tf.matMul(xd, A);
    let y = tf.add(tf.matMul(x2, kernel), tf.mul(tf.matMul(s, B), c.scaling));
    if (c.bias) y = tf.add(y, c.bias);
    if (c.activation === 'relu') y = tf.relu(y);
    save(keep ? [y, xd, s, kernel, A, B, keep] : [y, xd, s, kernel, A, B]);
    return {
      value: tf.reshape(y, [...lead, O]),
      gradFunc: (dy: Tensor, saved: Tensor[]) => {
        const [sy, sxd, ss, sk, sA, sB, skeep] = saved;
        // Through the ReLU: dy where y > 0 (0 at 0), as the fused gradient.
        const dy2 = c.activation === 'relu' ? tf.mul(tf.reshape(dy, [-1, O]), tf.cast(tf.greater(sy, 0), 'float32')) : tf.reshape(dy, [-1, O]);
        const ds = tf.mul(tf.matMul(dy2, sB, false, true), c.scaling);
        const loraDx = tf.matMul(ds, sA, false, true);
        const dx = tf.add(tf.matMul(dy2, sk, false, true), skeep ? tf.mul(loraDx, skeep) : loraDx);
        const grads = [tf.reshape(dx, [...lead, I]), tf.zerosLike(sk), tf.matMul(sxd, ds, true, false), tf.mul(tf.matMul(ss, dy2, true, false), c.scaling)];
        return c.bias ? [...grads, tf.zeros([O])] : grads;
      },
    };
  });
  return c.bias ? f(c.x, c.kernel, c.A, c.B, c.bias) : f(c.x, c.kernel, c.A, c.B);
}
