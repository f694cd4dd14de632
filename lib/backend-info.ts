// What the package computes with, and why: each backend's own report (the CPU addon's BLAS or
// built-in GEMM and its threads; whether the CUDA addon loaded and a device answered).
import { native } from './backends/cpu/binding';
import { cudaStatus } from './backends/cuda/binding';
import { fail } from './errors';
import { isInt } from './validate';

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
    /** The instruction set the built-in kernels run: "avx512", "avx2" or "generic". */
    builtinKernel: string;
    /** Why: the best the CPU supports, or FUSED_LORA_ISA (capped to what the CPU has). */
    builtinKernelReason: string;
    /**
     * The kernel of the reduced-precision frozen GEMM (bfloat16 layers, int8 and nf4 weights):
     * "amx" (AMX-BF16 tiles), "avx512bf16" (vdpbf16ps), else the built-in kernel's ISA, widening
     * bf16 to fp32.
     */
    lowpKernel: string;
    /** Why: FUSED_LORA_ISA, the CPU's features, or (where it has avx512_bf16) the kernels timed at first use. */
    lowpKernelReason: string;
    /**
     * int8 and nf4 weights at M <= 8 rows: "vnni" (integer dot products against x split into two int8
     * parts, where the decode path runs vdpbf16ps and the CPU has AVX512-VNNI) or "bf16" (x and the
     * weight's values rounded to bf16, as every other product of a reduced-precision base).
     */
    lowpQuantDecode: 'vnni' | 'bf16';
  };
  cuda: {
    /** The CUDA addon (a local build-cuda/Release build, or the prebuilt binary in prebuilds/) loaded. */
    loaded: boolean;
    /** It loaded and a device answered. */
    available: boolean;
    /** Why not: no addon built, no driver, no device ("" when available). */
    reason: string;
    addonPath: string;
    name: string;
    computeCapability: string;
    memoryBytes: number;
    driverVersion: number;
    runtimeVersion: number;
  };
}

export function backendInfo(): BackendInfo {
  const n = native.backendInfo();
  return {
    cpu: {
      blas: n.blas.name, blasPath: n.blas.path, request: n.blas.request, reason: n.blas.reason, tried: n.blas.tried,
      threads: n.threads, blasThreads: n.blas.threads, builtinKernel: n.builtinKernel,
      builtinKernelReason: n.builtinKernelReason, lowpKernel: n.lowpKernel, lowpKernelReason: n.lowpKernelReason,
      lowpQuantDecode: n.lowpQuantDecode,
    },
    cuda: cudaInfo(),
  };
}

function cudaInfo(): BackendInfo['cuda'] {
  const c = cudaStatus();
  const d = c.device;
  return {
    loaded: c.loaded, available: c.available, reason: c.reason, addonPath: c.addonPath,
    name: d?.name ?? '', computeCapability: d?.computeCapability ?? '', memoryBytes: d?.memoryBytes ?? 0,
    driverVersion: d?.driverVersion ?? 0, runtimeVersion: d?.runtimeVersion ?? 0,
  };
}

/** Threads for our kernels and the BLAS together (default: all cores, or FUSED_LORA_NUM_THREADS). */
export function setNumThreads(n: number): void {
  if (!isInt(n) || n < 1 || n > 1024) fail('ERR_ARGUMENT', 'setNumThreads', 'n', 'an integer in [1, 1024]', n);
  native.setNumThreads(n);
}
