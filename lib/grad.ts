// Trainable parameters and their gradients: the checks of a parameter and of its .grad, and zeroing
// the gradients, once for LoRA, the optimizers and Sequential. A parameter is a float32 master
// wherever it lives; its .grad is a float32 tensor of its shape on its device. Both are checked at
// every use (.grad may be reassigned), without allocating: an optimizer step checks every parameter.
import type { TensorStorage } from './backends/backend';
import { fail, said } from './errors';
import { tensorStorage } from './operands';
import { Tensor } from './tensor';
import { shapeString } from './validate';

/** A parameter's storage: a live float32 tensor whose storage matches its shape. */
export function paramStorage(where: string, arg: string, p: Tensor): TensorStorage {
  return tensorStorage(where, arg, p, { device: p.device, dtype: 'float32' });
}

/** p.grad's storage: a live float32 Tensor of p's shape on p's device. */
export function gradStorage(where: string, arg: string, p: Tensor): TensorStorage {
  const g = p.grad;
  if (!(g instanceof Tensor)) fail('ERR_ARGUMENT', where, `${arg}.grad`, 'a Tensor (a trainable parameter)', g);
  if (g.shape.length !== p.shape.length || g.shape.some((d, k) => d !== p.shape[k])) {
    fail('ERR_ARGUMENT', where, `${arg}.grad`, `a Tensor of the parameter's shape ${shapeString(p.shape)}`, said(`shape ${shapeString(g.shape)}`));
  }
  return tensorStorage(where, `${arg}.grad`, g, { device: p.device, dtype: 'float32' });
}

/**
 * Zeroes every parameter's gradient where it lives (a fill on a device). `name(i)` names params[i]
 * in messages; with `skipNoGrad`, a parameter whose .grad is null is passed over (a frozen one).
 */
export function zeroGrads(where: string, params: readonly Tensor[], name: (i: number) => string, skipNoGrad = false): void {
  params.forEach((p, i) => {
    if (p.grad === null && skipNoGrad) return;
    gradStorage(where, name(i), p).fill(0, where);
  });
}
