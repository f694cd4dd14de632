// The initial values a constructor takes (Linear's weight and bias, LoRA's A and B), placed where the
// layer lives. A tensor already there is used as is (Linear, like PyTorch, keeps the caller's tensor)
// or copied (LoRA keeps its own masters: the optimizer updates them in place); in another dtype there
// it is converted. Anything else is host values (a Float32Array, a tensor on another device, which is
// copied to the host): they are checked for non-finite values and put where the layer lives. Host
// memory is checked for non-finite values wherever it is given, since that costs no copy; device
// memory is not (it would cost a download). Construction is the one place where values move between
// devices without a .to(): the layer's device option asked for it.
import type { Placement } from './backends/backend';
import { backendFor, HOST } from './backends/registry';
import { exact } from './operands';
import { placementOf } from './placement';
import { Tensor } from './tensor';
import { checkFinite } from './validate';

export function placeParameter(where: string, arg: string, given: unknown, shape: readonly number[], on: Placement, copy: boolean): Tensor {
  const o = exact(where, arg, given, shape, given instanceof Tensor ? placementOf(given) : HOST);
  const hostMemory = o.storage.hostArray;
  if (given instanceof Tensor && given.device === on.device) {
    if (hostMemory !== null) checkFinite(where, arg, hostMemory);
    if (given.dtype !== on.dtype) return given.to(on.device, { dtype: on.dtype });
    if (!copy) return given;
    const own = backendFor(on).alloc(where, arg, on.dtype, o.n, false);
    own.copyFrom(o.storage, where);
    return new Tensor(own, shape);
  }
  const values = o.storage.hostView(where);
  checkFinite(where, arg, values);
  // A download is a copy already; host memory is copied only where the new storage would be it.
  return newParameter(values, shape, on, copy && hostMemory !== null);
}

/** Host values (an initialiser's draw) as a new parameter of `on`: the array itself where the storage may be it, unless `copy`. */
export function newParameter(values: Float32Array, shape: readonly number[], on: Placement, copy = false): Tensor {
  return new Tensor(backendFor(on).fromHost(values, on.dtype, copy), shape);
}
