// What the package computes with, and why: the BLAS found (or the built-in GEMM), its threads, and
// the CUDA backend's state.
import { native } from './binding';
import { fail, isInt } from './validate';

export interface BackendInfo {
  cpu: {
    /** "openblas", "mkl", "blis", "accelerate", another CBLAS by name, or "builtin". */
    blas: string;
    /** The library file loaded; empty for the built-in GEMM. */
    blasPath: string;
    /** FUSED_LORA_BLAS as read ("auto" when unset). */
    request: string;
    /** Why this BLAS was chosen. */
    reason: string;
    /** Every candidate tried, and what happened. */
    tried: string[];
    /** Threads of our own kernels, and of the BLAS (0 when none is loaded). */
    threads: number;
    blasThreads: number;
    /** The built-in GEMM's micro-kernel on this CPU: "avx512", "avx2" or "generic". */
    builtinKernel: string;
  };
  cuda: { available: boolean; reason: string };
}

export function backendInfo(): BackendInfo {
  const n = native.backendInfo();
  return {
    cpu: {
      blas: n.blas.name, blasPath: n.blas.path, request: n.blas.request, reason: n.blas.reason, tried: n.blas.tried,
      threads: n.threads, blasThreads: n.blas.threads, builtinKernel: n.builtinKernel,
    },
    cuda: { available: false, reason: 'this build has no CUDA addon (fused_lora_cuda.node is not built)' },
  };
}

/** Threads for our kernels and the BLAS together (default: all cores, or FUSED_LORA_NUM_THREADS). */
export function setNumThreads(n: number): void {
  if (!isInt(n) || n < 1 || n > 1024) fail('ERR_ARGUMENT', 'setNumThreads', 'n', 'an integer in [1, 1024]', n);
  native.setNumThreads(n);
}
