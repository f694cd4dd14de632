// Parameters handed to a constructor (Linear's weight and bias, LoRA's A and B) on a layer that lives
// on the CUDA device. A cuda tensor of the right dtype is used as is (Linear, like on the CPU, keeps
// the caller's tensor) or copied (LoRA keeps its own masters); host values (a cpu Tensor, a
// Float32Array) are checked for non-finite values, as on the CPU, and uploaded; a cuda tensor of
// another dtype is converted on the device. Construction is the one place where host values move to
// the device without a .to(): the layer's device option asked for it.
import { resolveExact } from './inputs';
import { Tensor } from './tensor';
import { checkFinite } from './validate';
import { DType } from './dtype';
import { deviceExact } from './backends/cuda/inputs';
import { DeviceStorage } from './backends/cuda/storage';

export function placeParameter(where: string, arg: string, given: unknown, shape: readonly number[], dtype: DType, copy: boolean): Tensor {
  if (given instanceof Tensor && given.device === 'cuda') {
    if (given.dtype !== dtype) {
      deviceExact(where, arg, given, shape, given.dtype);
      return given.to('cuda', { dtype });
    }
    const t = deviceExact(where, arg, given, shape, dtype);
    if (!copy) return given;
    const own = DeviceStorage.alloc(dtype, t.n);
    own.copyFrom(t.storage, where);
    return new Tensor(own, shape);
  }
  const host = resolveExact(where, arg, given, shape).data;
  checkFinite(where, arg, host);
  return new Tensor(DeviceStorage.upload(host, dtype), shape);
}

/** Host values (an initialiser's draw) as a new device tensor. */
export function uploadParameter(values: Float32Array, shape: readonly number[], dtype: DType): Tensor {
  return new Tensor(DeviceStorage.upload(values, dtype), shape);
}
