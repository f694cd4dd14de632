// Activations with backward, elementwise, for any shape, where their backend has kernels for them
// (the CPU for now). The classes are modules for a Sequential: forward saves its input (a reference,
// not a copy, as LinearLoRA saves x), backward turns dy into dx, and there is nothing to train. The
// functions are the forward alone.
import type { ActivationKernels, ActivationKind, Operand, Placement } from './backends/backend';
import { fail, said } from './errors';
import { backendWith, exact, operand, output, TensorLike } from './operands';
import { Tensor } from './tensor';
import { checkBoolean, checkOptions, optionKeys } from './validate';

export interface ActivationBackwardOptions {
  /** false skips dx (the layer below needs no gradient); backward then returns null. Default true. */
  inputGrad?: boolean;
}
const BACKWARD_KEYS = optionKeys<ActivationBackwardOptions>({ inputGrad: true });

const kernelsOf = (where: string, x: unknown) => backendWith(where, 'x', x, (b) => b.activations, 'the activations');

function apply(where: string, kind: ActivationKind, x: unknown): { y: Tensor; x: Operand; on: Placement; kernels: ActivationKernels } {
  const { on, kernels } = kernelsOf(where, x);
  const xin = operand(where, 'x', x, on);
  const y = output(where, undefined, xin.shape, on);
  kernels.forward(kind, xin, y.op);
  return { y: y.tensor, x: xin, on, kernels };
}

/** max(x, 0) elementwise; a new tensor of x's shape (NaN stays NaN, as in PyTorch). */
export function relu(x: TensorLike): Tensor {
  return apply('relu', 'relu', x).y;
}

/** The exact GELU, x·Φ(x) with Φ the standard normal CDF (PyTorch's nn.GELU() default, not the tanh form). */
export function gelu(x: TensorLike): Tensor {
  return apply('gelu', 'gelu', x).y;
}

abstract class Activation {
  #saved: { x: Operand; on: Placement; kernels: ActivationKernels } | null = null;

  protected abstract readonly name: string;
  protected abstract readonly kind: ActivationKind;

  /** y of x's shape; saves x for backward. */
  forward(x: TensorLike): Tensor {
    const { y, x: xin, on, kernels } = apply(`${this.name}.forward`, this.kind, x);
    this.#saved = { x: xin, on, kernels };
    return y;
  }

  /** dx for dy of the last forward's shape (a Float32Array of its length is taken with that shape). */
  backward(dy: TensorLike, options?: ActivationBackwardOptions): Tensor | null {
    const where = `${this.name}.backward`;
    const opts = checkOptions(where, options, BACKWARD_KEYS);
    const saved = this.#saved;
    if (saved === null) fail('ERR_ARGUMENT', where, '', 'a forward() before backward()', said('none'));
    const d = exact(where, 'dy', dy, saved.x.shape, saved.on);
    if (opts.inputGrad !== undefined && !checkBoolean(where, 'options.inputGrad', opts.inputGrad)) return null;
    const dx = output(where, undefined, saved.x.shape, saved.on);
    saved.kernels.backward(this.kind, saved.x, d, dx.op);
    return dx.tensor;
  }

  /** Nothing to train. */
  parameters(): Tensor[] {
    return [];
  }
}

/** ReLU as a module: y = max(x, 0), dx = dy where x > 0 (0 at x = 0, as PyTorch). */
export class ReLU extends Activation {
  protected readonly name = 'ReLU';
  protected readonly kind = 'relu';
}

/** Exact (erf) GELU as a module: y = x·Φ(x), dx = dy·(Φ(x) + x·φ(x)). */
export class GELU extends Activation {
  protected readonly name = 'GELU';
  protected readonly kind = 'gelu';
}
