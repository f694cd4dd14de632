// Where a tensor or a layer lives and in which dtype, decided once from the options a caller passes
// (`device: 'cpu' | 'cuda' | 'auto'`, `dtype`), with one set of rules and messages:
//   - 'cuda' without a device that answers is ERR_DEVICE, with the reason (resolveDevice);
//   - 'auto' is CUDA where it answers, else the CPU; on the CPU a 16-bit dtype requested with
//     'auto' becomes float32 (the CPU kernels compute in float32), so one script runs anywhere;
//   - an explicit 'cpu' with bfloat16 or float16 is ERR_DTYPE.
import { cudaStatus, resolveDevice } from './backends/cuda/binding';
import { describe, LoraError } from './errors';
import { Device, DType, isDType } from './dtype';

export interface Placement {
  device: Device;
  dtype: DType;
}

/** The device named by `device` (undefined takes `fallback`), checked and resolved. */
export function placeDevice(where: string, arg: string, device: unknown, fallback: Device | 'auto' = 'cpu'): { device: Device; auto: boolean } {
  const d = device === undefined ? fallback : device;
  if (d === 'cpu') return { device: 'cpu', auto: false };
  if (d !== 'cuda' && d !== 'auto') {
    throw new LoraError('ERR_DEVICE', `${where}: expected 'cpu', 'cuda' or 'auto' for ${arg} but received ${describe(d)}`);
  }
  if (d === 'auto') return { device: resolveDevice('auto').device, auto: true };
  const st = cudaStatus();
  if (!st.available) throw new LoraError('ERR_DEVICE', `${where}: expected a CUDA device that answers for ${arg}: 'cuda' but received none: ${st.reason}`);
  return { device: 'cuda', auto: false };
}

/**
 * Device and dtype together, for the arguments named `args` ([device, dtype]). An undefined dtype is
 * float32 on the CPU and `defaults.dtype` (else float32) on the device.
 */
export function place(
  where: string, args: readonly [string, string], device: unknown, dtype: unknown,
  defaults: { device?: Device | 'auto'; dtype?: DType } = {},
): Placement {
  const p = placeDevice(where, args[0], device, defaults.device);
  const t = dtype === undefined ? (p.device === 'cpu' ? 'float32' : defaults.dtype ?? 'float32') : dtype;
  if (!isDType(t)) throw new LoraError('ERR_DTYPE', `${where}: expected 'float32', 'bfloat16' or 'float16' for ${args[1]} but received ${describe(t)}`);
  if (p.device === 'cpu' && t !== 'float32') {
    if (p.auto) return { device: 'cpu', dtype: 'float32' };
    throw new LoraError('ERR_DTYPE', `${where}: expected 'float32' on the CPU for ${args[1]} but received ${describe(t)} (bfloat16 and float16 live on device 'cuda')`);
  }
  return { device: p.device, dtype: t };
}
