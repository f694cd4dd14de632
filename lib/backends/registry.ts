// The one place a placement becomes a backend. Facades ask here once, at construction (a layer, an
// optimizer's state) or per call for what a tensor argument decides (a loss follows its prediction);
// nothing outside the backend folders branches on a device. Adding a backend is adding it to BACKENDS.
import type { Backend, HostKernels, Placement } from './backend';
import { cpuBackend, cpuHostKernels } from './cpu';
import { cpuBf16Backend } from './cpu-lowp';
import { cudaBackend } from './cuda';
import type { Device, DType } from '../dtype';

/** Every backend, in the order device 'auto' prefers them (the host last: it always answers). */
export const BACKENDS: readonly Backend[] = Object.freeze([cudaBackend, cpuBackend, cpuBf16Backend]);

/** Host float32 memory: a Float32Array given to tensor(), and where arrays a caller passes live. */
export const HOST: Placement = Object.freeze({ device: 'cpu', dtype: 'float32' });

/** The host's kernels the facades run on host copies (merge, the gradient norm). */
export const hostKernels: HostKernels = cpuHostKernels;

/** The backend of `p`. Placement (lib/placement.ts) has checked that the dtype table allows it. */
export function backendFor(p: Placement): Backend {
  return backendOf(p.device, p.dtype) ?? internalError(p);
}

/** The backend that holds `dtype` on `device`, or undefined. */
export function backendOf(device: Device, dtype: DType): Backend | undefined {
  return BACKENDS.find((b) => b.device === device && b.dtypes.includes(dtype));
}

/** The backends of a device (its status is theirs: one addon). */
export function backendsOn(device: Device): readonly Backend[] {
  return BACKENDS.filter((b) => b.device === device);
}

function internalError(p: Placement): never {
  throw new Error(`fused-lora: no backend holds ${p.dtype} on ${p.device} (the dtype table and the backends disagree)`);
}
