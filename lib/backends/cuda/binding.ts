// Loads the CUDA addon (build-cuda/Release/fused_lora_cuda.node, built by `npm run build:cuda`) if it
// is there, and types its exports once. Loading never throws: a missing or broken addon is recorded
// with the reason, and the CPU backend carries on. The CUDA backend (this folder) calls the addon only
// through cudaBinding(), so a test can put a CPU fake of the same interface in its place
// (__setCudaBindingForTests) and run the very same TS code.
import fs from 'node:fs';
import path from 'node:path';
import type { DType } from '../../dtype';
import { errorAt, LoraError } from '../../errors';

/** The addon's element types: ours (lib/dtype.ts), stored as its DType does. */
export type CudaDtype = DType;

export interface CudaDeviceInfo {
  available: boolean;
  /** Why not, when !available: no driver, no device, or a compute capability below 8.0. */
  reason: string;
  deviceCount: number;
  name: string;
  /** "9.0" on an H100/H200; empty without a device. */
  computeCapability: string;
  memoryBytes: number;
  multiprocessors: number;
  /** e.g. 13000; 0 when no driver answers. */
  driverVersion: number;
  /** The CUDA runtime linked (statically) into the addon. */
  runtimeVersion: number;
}

/** A block of device memory from the caching allocator; dispose() returns it at once. */
export interface DeviceBuffer {
  readonly bytes: number;
  readonly disposed: boolean;
  dispose(): void;
}

/** The extended layout of a LoRA layer (I, O, r) on the device: W_ext is (rows, ldx), x_ext (M, ldx), dy_ext (M, ldy). */
export interface WExtLayout {
  /** r rounded up to the GEMM's K step. */
  rPad: number;
  /** I + r_pad: W_ext's and x_ext's leading dimension. */
  ldx: number;
  /** O + r_pad: dy_ext's leading dimension. */
  ldy: number;
  /** O + r_pad: W_ext's rows (W on top, Aᵀ below). */
  rows: number;
  /** rows · ldx: W_ext's elements. */
  elements: number;
}

export interface CudaLayerArgs {
  dtype: CudaDtype; math?: 'tf32' | 'exact';
  M: number; I: number; O: number; r: number; scaling?: number;
}

/**
 * The CUDA addon's exports (native/cuda_addon/*_entry.cpp). Shapes are row-major; ld = leading dimension.
 * `accumulate` is always passed: the TS layer never relies on an addon's default for it.
 */
export interface CudaBinding {
  setErrorClass(ctor: typeof LoraError): void;
  deviceInfo(): CudaDeviceInfo;
  memoryStats(): { allocatedBytes: number; cachedBytes: number; reservedBytes: number };
  emptyCache(): void;
  rankPad(args: { r: number }): number;
  /** The extended layout of a LoRA layer (native/cuda/tile_math.h): the one source of r_pad and the leading dimensions. */
  wExtLayout(args: { I: number; O: number; r: number }): WExtLayout;
  alloc(bytes: number): DeviceBuffer;
  upload(args: { buffer: DeviceBuffer; dtype: CudaDtype | 'int32'; data: Float32Array | Int32Array; rows?: number; cols?: number; ld?: number }): void;
  download(args: { buffer: DeviceBuffer; dtype: CudaDtype; rows: number; cols: number; ld?: number }): Float32Array;
  downloadAsync(args: { buffer: DeviceBuffer; dtype: CudaDtype; rows: number; cols: number; ld?: number }): Promise<Float32Array>;
  fill(args: { buffer: DeviceBuffer; dtype: CudaDtype; rows: number; cols: number; ld?: number; value: number }): void;
  cast(args: { dst: DeviceBuffer; dstDtype: CudaDtype; ldDst?: number; src: DeviceBuffer; srcDtype: CudaDtype; ldSrc?: number; rows: number; cols: number }): void;
  gemm(args: {
    dtype: CudaDtype; math?: 'tf32' | 'exact'; bLayout?: 'nt' | 'nn'; M: number; N: number; K: number;
    alpha?: number; beta?: number; A: DeviceBuffer; lda?: number; B: DeviceBuffer; ldb?: number;
    bias?: DeviceBuffer | null; C: DeviceBuffer; ldc?: number;
  }): void;
  refreshWExt(args: { dtype: CudaDtype; I: number; O: number; r: number; scaling?: number; wExt: DeviceBuffer; A: DeviceBuffer; B: DeviceBuffer }): void;
  loraForwardFused(args: CudaLayerArgs & { xExt: DeviceBuffer; wExt: DeviceBuffer; bias?: DeviceBuffer | null; A: DeviceBuffer; y: DeviceBuffer; ldy?: number }): void;
  loraBackwardFused(args: CudaLayerArgs & {
    xExt: DeviceBuffer; dyExt: DeviceBuffer; wExt: DeviceBuffer; B: DeviceBuffer; dsWork: DeviceBuffer;
    dA: DeviceBuffer; dB: DeviceBuffer; dx?: DeviceBuffer | null; lddx?: number; accumulate: boolean;
  }): void;
  loraForwardUnfused(args: CudaLayerArgs & {
    x: DeviceBuffer; W: DeviceBuffer; bias?: DeviceBuffer | null; A: DeviceBuffer; B: DeviceBuffer; s: DeviceBuffer; u: DeviceBuffer; y: DeviceBuffer;
  }): void;
  loraBackwardUnfused(args: CudaLayerArgs & {
    x: DeviceBuffer; s: DeviceBuffer; dy: DeviceBuffer; W: DeviceBuffer; A: DeviceBuffer; B: DeviceBuffer;
    du: DeviceBuffer; ds: DeviceBuffer; dA: DeviceBuffer; dB: DeviceBuffer; dx?: DeviceBuffer | null; accumulate: boolean;
  }): void;
  /** Many adapters on one base (native/cuda_addon/multi_lora_entry.cpp): R = Σ rankPad(r_i); index is int32 (M row adapters, then R column adapters). */
  multiLoraRefresh(args: {
    dtype: CudaDtype; I: number; O: number; R: number; adapters: Array<{ r: number; scaling: number; A: DeviceBuffer; B: DeviceBuffer }>;
    aCat: DeviceBuffer; bCat: DeviceBuffer; wExt: DeviceBuffer;
  }): void;
  multiLoraForwardFused(args: {
    dtype: CudaDtype; math?: 'tf32' | 'exact'; M: number; I: number; O: number; R: number;
    xExt: DeviceBuffer; wExt: DeviceBuffer; bias?: DeviceBuffer | null; aCat: DeviceBuffer; index: DeviceBuffer; y: DeviceBuffer; ldy?: number;
  }): void;
  multiLoraBackwardFused(args: {
    dtype: CudaDtype; math?: 'tf32' | 'exact'; M: number; I: number; O: number; R: number;
    xExt: DeviceBuffer; dyExt: DeviceBuffer; wExt: DeviceBuffer; bCat: DeviceBuffer; index: DeviceBuffer;
    dsWork: DeviceBuffer; dACat: DeviceBuffer; dBCat: DeviceBuffer;
    adapters: Array<{ r: number; scaling: number; dA: DeviceBuffer; dB: DeviceBuffer }>; dx?: DeviceBuffer | null; lddx?: number;
  }): void;
  adamw(args: { n: number; param: DeviceBuffer; grad: DeviceBuffer; m: DeviceBuffer; v: DeviceBuffer; lr?: number; beta1?: number; beta2?: number; eps?: number; weightDecay?: number; step: number }): void;
  mseLoss(args: { dtype: CudaDtype; n: number; pred: DeviceBuffer; target: DeviceBuffer; loss: DeviceBuffer; dpred?: DeviceBuffer | null }): void;
  crossEntropyLoss(args: { dtype: CudaDtype; N: number; C: number; logits: DeviceBuffer; ld?: number; labels: DeviceBuffer; loss: DeviceBuffer; dlogits?: DeviceBuffer | null; ldd?: number }): void;
  synchronize(): void;
  synchronizeAsync(): Promise<void>;
}

export interface CudaLoad {
  binding: CudaBinding | null;
  /** Where the addon was looked for, and why it did not load (empty when it did). */
  path: string;
  reason: string;
}

/** Where the addon lives: FUSED_LORA_CUDA_ADDON overrides (a path to a .node file). */
export function cudaAddonPath(): string {
  return process.env.FUSED_LORA_CUDA_ADDON || path.join(__dirname, '..', '..', '..', 'build-cuda', 'Release', 'fused_lora_cuda.node');
}

let loaded: CudaLoad | undefined;

/** Loads the CUDA addon once; never throws. */
export function loadCuda(): CudaLoad {
  if (loaded) return loaded;
  const file = cudaAddonPath();
  if (!fs.existsSync(file)) {
    loaded = { binding: null, path: file, reason: `no CUDA addon built (${file} does not exist; run \`npm run build:cuda\` with nvcc on the PATH)` };
    return loaded;
  }
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const binding = require(file) as CudaBinding;
    binding.setErrorClass(LoraError);
    loaded = { binding, path: file, reason: '' };
  } catch (err) {
    loaded = { binding: null, path: file, reason: `the CUDA addon at ${file} did not load: ${(err as Error).message}` };
  }
  return loaded;
}

export interface CudaStatus {
  /** The addon loaded. */
  loaded: boolean;
  /** The addon loaded and a device answered. */
  available: boolean;
  /** Why not, when !available ("" when available). */
  reason: string;
  addonPath: string;
  device: CudaDeviceInfo | null;
}

/** The CUDA backend's state, as backendInfo().cuda reports it. */
export function cudaStatus(): CudaStatus {
  const l = loadCuda();
  if (!l.binding) return { loaded: false, available: false, reason: l.reason, addonPath: l.path, device: null };
  const device = l.binding.deviceInfo();
  return { loaded: true, available: device.available, reason: device.available ? '' : device.reason, addonPath: l.path, device };
}

/** True when the CUDA addon loads and a device answers. */
export function cudaAvailable(): boolean {
  return cudaStatus().available;
}

/**
 * Tests only: `binding` replaces the CUDA addon for this process (a fake implementing CudaBinding,
 * e.g. test/fixtures/fake-cuda.ts); null forgets it, so the next use loads the real addon again.
 * Tensors made with one binding must not be used with another.
 */
export function __setCudaBindingForTests(binding: CudaBinding | null): void {
  if (binding) binding.setErrorClass(LoraError);
  loaded = binding ? { binding, path: '<test binding>', reason: '' } : undefined;
}

/** The loaded binding, or ERR_DEVICE saying why there is none. */
export function cudaBinding(): CudaBinding {
  const l = loadCuda();
  if (!l.binding) throw errorAt('ERR_DEVICE', 'fused-lora', l.reason);
  return l.binding;
}
