// Loads the native addon and types its exports once, so the rest of lib/ never touches an untyped
// object. node-gyp-build looks in build/Release first (a local build), then prebuilds/.
import path from 'node:path';
import nodeGypBuild from 'node-gyp-build';
import { fail, LoraError, said } from '../../errors';

export interface NativeBlasInfo {
  name: string;
  path: string;
  request: string;
  reason: string;
  threads: number;
  tried: string[];
}

export interface NativeBackendInfo {
  blas: NativeBlasInfo;
  builtinKernel: string;
  builtinKernelReason: string;
  lowpKernel: 'amx' | 'avx512bf16' | 'avx512' | 'avx2' | 'generic';
  lowpKernelReason: string;
  lowpQuantDecode: 'vnni' | 'bf16';
  threads: number;
}

/** The built-in GEMM's kernel table and the CPU kernels' path boundaries (native/addon/gemm_entry.cpp). */
export interface NativeKernelTable {
  isa: 'avx512' | 'avx2' | 'generic';
  best: 'avx512' | 'avx2' | 'generic';
  request: string;
  reason: string;
  kernels: Array<{ mr: number; nr: number; mc: number; kc: number; nc: number }>;
  dot: { maxN: number; kc: number } | null;
  minFlopsPerThread: number;
  minGemvBytesPerThread: number;
  /** x·Wᵀ (A row-major, B transposed) for 2 up to this many rows is one GEMV over the rows ('gemv-multi'). */
  gemvMaxRows: number;
  threads: number;
  lora: { frozenBuiltinMaxRows: number; dxRankRMinBytes: number; rankRStreamBytes: number; rankRTileRows: number; rankRTileCols: number; rankRIsa: string };
}

export interface GemmPlanArgs { transA: boolean; transB: boolean; M: number; N: number; K: number; alpha?: number }

/** How the built-in GEMM would run one call; the blocking is that of the first thread's share of C. */
export interface NativeGemmPlan {
  path: 'none' | 'scale' | 'gemv-rows' | 'gemv-cols' | 'gemv-multi' | 'dot' | 'blocked';
  threads: number;
  kernel: number;
  tm: number; tn: number;
  MC: number; NC: number; KC: number;
  directA: boolean; directB: boolean; lazyB: boolean;
}

export interface LinearForwardArgs {
  M: number; I: number; O: number;
  x: Float32Array; W: Float32Array; bias?: Float32Array | null; y: Float32Array;
}
export interface LinearBackwardArgs {
  M: number; I: number; O: number;
  dy: Float32Array; W: Float32Array; dx: Float32Array;
}

/** `fanInFanOut`: W is stored (I, O) instead of (O, I); the kernels read either in place (default false). */
export interface LoraForwardArgs {
  M: number; I: number; O: number; r: number;
  x: Float32Array; W: Float32Array; fanInFanOut?: boolean; bias?: Float32Array | null; A: Float32Array; B: Float32Array;
  scaling: number; fused: boolean;
  dropoutP?: number; seed?: number; step?: number; mask?: Uint8Array; xDrop?: Float32Array;
  s: Float32Array; y: Float32Array;
}

export interface LoraBackwardArgs {
  M: number; I: number; O: number; r: number;
  x: Float32Array; s: Float32Array; dy: Float32Array; W: Float32Array; fanInFanOut?: boolean; A: Float32Array; B: Float32Array;
  scaling: number; fused: boolean;
  dropoutP?: number; mask?: Uint8Array; xDrop?: Float32Array;
  ds: Float32Array; loraDx?: Float32Array; dx?: Float32Array | null; dA: Float32Array; dB: Float32Array;
  accumulate: boolean;
}

/** Multi-adapter layer (native/addon/multi_lora_entry.cpp). index (M): row → adapter, -1 = frozen only. */
export interface MultiLoraGroupArgs { M: number; K: number; index: Int32Array; order: Int32Array; start: Int32Array }
export interface MultiLoraAdapterArgs {
  r: number; A: Float32Array; B: Float32Array; scaling: number;
  dropoutP?: number; seed?: number; step?: number;
  dA?: Float32Array; dB?: Float32Array;
}
/**
 * The frozen weight and the activations of a multi-adapter call: float32 (no wFormat, no act), or in
 * the formats of the reduced-precision backend (lib/backends/cpu-lowp/binding.ts: WeightArgs, Act),
 * which the same exports take.
 */
export interface MultiLoraOperands {
  wFormat?: 'f32' | 'bf16' | 'int8' | 'nf4';
  W: Float32Array | Uint16Array | Int8Array | Uint8Array;
  wScale?: Float32Array;
  wAbsmax?: Float32Array;
  act?: 'f32' | 'bf16';
}
export interface MultiLoraForwardArgs extends MultiLoraOperands {
  M: number; I: number; O: number; K: number;
  x: Float32Array | Uint16Array; bias?: Float32Array | null;
  order: Int32Array; start: Int32Array; adapters: MultiLoraAdapterArgs[];
  s: Float32Array; xt?: Float32Array; mask?: Uint8Array; y: Float32Array | Uint16Array;
}
export interface MultiLoraBackwardArgs extends MultiLoraOperands {
  M: number; I: number; O: number; K: number;
  x: Float32Array | Uint16Array; dy: Float32Array | Uint16Array;
  order: Int32Array; start: Int32Array; adapters: MultiLoraAdapterArgs[];
  s: Float32Array; ds: Float32Array; xt?: Float32Array; mask?: Uint8Array; dyg?: Float32Array; dx?: Float32Array | Uint16Array | null;
}

export interface GemmArgs {
  transA: boolean; transB: boolean; M: number; N: number; K: number; alpha: number;
  A: Float32Array; lda: number; B: Float32Array; ldb: number; beta: number; C: Float32Array; ldc: number;
  backend?: 'auto' | 'builtin' | 'blas';
}

export interface MergeArgs {
  W: Float32Array; A: Float32Array; B: Float32Array; I: number; O: number; r: number; scaling: number; sign: 1 | -1;
}

// Training kernels (native/addon/train_entry.cpp): one call per parameter tensor or per loss, in place.
export interface AdamWStepArgs {
  n: number; param: Float32Array; grad: Float32Array; expAvg: Float32Array; expAvgSq: Float32Array;
  lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; step: number;
}
export interface SgdStepArgs {
  n: number; param: Float32Array; grad: Float32Array; momentumBuffer: Float32Array | null;
  lr: number; momentum: number; dampening: number; weightDecay: number; nesterov: boolean; firstStep: boolean;
}
export interface ClipGradNormArgs { grads: Float32Array[]; maxNorm: number; errorIfNonfinite: boolean }
export interface MseLossArgs { n: number; y: Float32Array; target: Float32Array; grad: Float32Array }
export interface CrossEntropyLossArgs { M: number; C: number; logits: Float32Array; labels: Int32Array; grad: Float32Array }
export interface ActivationForwardArgs { n: number; x: Float32Array; y: Float32Array }
export interface ActivationBackwardArgs { n: number; x: Float32Array; dy: Float32Array; dx: Float32Array }

export interface BindingModule {
  adamwStep(args: AdamWStepArgs): void;
  sgdStep(args: SgdStepArgs): void;
  /** Returns the total L2 norm (before clipping). */
  clipGradNorm(args: ClipGradNormArgs): number;
  /** Returns the mean loss; writes the gradient into args.grad. */
  mseLoss(args: MseLossArgs): number;
  crossEntropyLoss(args: CrossEntropyLossArgs): number;
  reluForward(args: ActivationForwardArgs): void;
  reluBackward(args: ActivationBackwardArgs): void;
  geluForward(args: ActivationForwardArgs): void;
  geluBackward(args: ActivationBackwardArgs): void;
  setErrorClass(ctor: typeof LoraError): void;
  backendInfo(): NativeBackendInfo;
  setNumThreads(n: number): void;
  gemm(args: GemmArgs): void;
  builtinKernels(): NativeKernelTable;
  gemmPlan(args: GemmPlanArgs): NativeGemmPlan;
  merge(args: MergeArgs): boolean;
  linearForward(args: LinearForwardArgs): void;
  linearBackward(args: LinearBackwardArgs): void;
  linearForwardAsync(args: LinearForwardArgs): Promise<void>;
  linearBackwardAsync(args: LinearBackwardArgs): Promise<void>;
  loraForward(args: LoraForwardArgs): void;
  loraBackward(args: LoraBackwardArgs): void;
  loraForwardAsync(args: LoraForwardArgs): Promise<void>;
  loraBackwardAsync(args: LoraBackwardArgs): Promise<void>;
  /** Groups rows by adapter into order and start; returns whether every adapter's rows are one run. */
  multiLoraGroup(args: MultiLoraGroupArgs): boolean;
  multiLoraForward(args: MultiLoraForwardArgs): void;
  multiLoraBackward(args: MultiLoraBackwardArgs): void;
  multiLoraForwardAsync(args: MultiLoraForwardArgs): Promise<void>;
  multiLoraBackwardAsync(args: MultiLoraBackwardArgs): Promise<void>;
}

function load(): BindingModule {
  const root = path.join(__dirname, '..', '..', '..');
  let mod: BindingModule;
  try {
    mod = nodeGypBuild(root) as BindingModule;
  } catch (err) {
    // The addon loaded but refused its environment (an unknown FUSED_LORA_ISA): its own message, as built natively.
    if ((err as { code?: unknown }).code === 'ERR_ARGUMENT') throw new LoraError('ERR_ARGUMENT', (err as Error).message);
    fail('ERR_BACKEND', 'fused-lora', 'the native addon', `a build in ${root}/build/Release or ${root}/prebuilds`, said((err as Error).message),
      'build it with `npm run build:native` (needs Python, make and a C++17 compiler)');
  }
  mod.setErrorClass(LoraError);
  return mod;
}

/** The CPU addon, loaded on first import. */
export const native: BindingModule = load();
