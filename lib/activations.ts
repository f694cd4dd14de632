// Activations with backward, computed natively and elementwise, for any shape. The classes are
// modules for a Sequential: forward saves its input (a reference, not a copy, as LinearLoRA saves x),
// backward turns dy into dx, and there is nothing to train. The functions are the forward alone.
import { ActivationBackwardArgs, ActivationForwardArgs, native } from './backends/cpu/binding';
import { fail, said } from './errors';
import { resolve, resolveExact, TensorLike } from './inputs';
import { Tensor } from './tensor';
import { checkBoolean, checkOptions, optionKeys } from './validate';

type Kernel = (args: ActivationForwardArgs) => void;
type BackwardKernel = (args: ActivationBackwardArgs) => void;

export interface ActivationBackwardOptions {
  /** false skips dx (the layer below needs no gradient); backward then returns null. Default true. */
  inputGrad?: boolean;
}
const BACKWARD_KEYS = optionKeys<ActivationBackwardOptions>({ inputGrad: true });

function apply(where: string, kernel: Kernel, x: unknown): { y: Tensor; x: Float32Array; shape: readonly number[] } {
  const xin = resolve(where, 'x', x);
  const y = new Tensor(new Float32Array(xin.data.length), xin.shape);
  kernel({ n: xin.data.length, x: xin.data, y: y.buffer() });
  return { y, x: xin.data, shape: xin.shape };
}

/** max(x, 0) elementwise; a new tensor of x's shape (NaN stays NaN, as in PyTorch). */
export function relu(x: TensorLike): Tensor {
  return apply('relu', native.reluForward, x).y;
}

/** The exact GELU, x·Φ(x) with Φ the standard normal CDF (PyTorch's nn.GELU() default, not the tanh form). */
export function gelu(x: TensorLike): Tensor {
  return apply('gelu', native.geluForward, x).y;
}

abstract class Activation {
  #saved: { x: Float32Array; shape: readonly number[] } | null = null;

  protected abstract readonly name: string;
  protected abstract readonly forwardKernel: Kernel;
  protected abstract readonly backwardKernel: BackwardKernel;

  /** y of x's shape; saves x for backward. */
  forward(x: TensorLike): Tensor {
    const { y, x: data, shape } = apply(`${this.name}.forward`, this.forwardKernel, x);
    this.#saved = { x: data, shape };
    return y;
  }

  /** dx for dy of the last forward's shape (a Float32Array of its length is taken with that shape). */
  backward(dy: TensorLike, options?: ActivationBackwardOptions): Tensor | null {
    const where = `${this.name}.backward`;
    const opts = checkOptions(where, options, BACKWARD_KEYS);
    const saved = this.#saved;
    if (saved === null) fail('ERR_ARGUMENT', where, '', 'a forward() before backward()', said('none'));
    const d = resolveExact(where, 'dy', dy, saved.shape);
    if (opts.inputGrad !== undefined && !checkBoolean(where, 'options.inputGrad', opts.inputGrad)) return null;
    const dx = new Tensor(new Float32Array(d.data.length), saved.shape);
    this.backwardKernel({ n: d.data.length, x: saved.x, dy: d.data, dx: dx.buffer() });
    return dx;
  }

  /** Nothing to train. */
  parameters(): Tensor[] {
    return [];
  }
}

/** ReLU as a module: y = max(x, 0), dx = dy where x > 0 (0 at x = 0, as PyTorch). */
export class ReLU extends Activation {
  protected readonly name = 'ReLU';
  protected readonly forwardKernel = native.reluForward;
  protected readonly backwardKernel = native.reluBackward;
}

/** Exact (erf) GELU as a module: y = x·Φ(x), dx = dy·(Φ(x) + x·φ(x)). */
export class GELU extends Activation {
  protected readonly name = 'GELU';
  protected readonly forwardKernel = native.geluForward;
  protected readonly backwardKernel = native.geluBackward;
}
