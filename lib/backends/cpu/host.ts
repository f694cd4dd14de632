// The host kernels every backend's facade may use on host float32 views: merge and the gradient norm.
import type { HostKernels } from '../backend';
import { native } from './binding';

export const cpuHostKernels: HostKernels = {
  merge: (W, A, B, I, O, r, scaling, sign) => native.merge({ W, A, B, I, O, r, scaling, sign }),
  clipGradNorm: (grads, maxNorm, errorIfNonfinite) => native.clipGradNorm({ grads, maxNorm, errorIfNonfinite }),
};
