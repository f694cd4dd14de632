// The one interface every backend implements. A backend is everything of one kind of memory and the
// kernels that compute on it: its storage, its layer kinds, its optimizer, loss, activation and ops
// kernels. The facades (Linear, LinearLoRA, LoRA, the optimizers, the losses, ops, Sequential) check
// every argument once, in one wording, turn what the caller passed into Operands of the layer's
// placement, and call a backend chosen once, at construction, by registry.ts from a Placement. A
// backend sees only checked Operands and never a Tensor; it allocates nothing a facade could have
// given it, and says no (a null kernel, a false flag) where it cannot do something yet, so the facade
// can refuse with one message for every backend. docs/ARCHITECTURE.md shows how a call flows through
// it and how to add a backend or a layer kind.
import type { Device, DType } from '../dtype';

export type { Device, DType };

/** Where a tensor or a layer lives, and the dtype it holds or computes in. */
export interface Placement {
  readonly device: Device;
  readonly dtype: DType;
}

/**
 * The memory behind a Tensor: one implementation per backend (a Float32Array on the CPU, a block of
 * the caching allocator on the CUDA device). Element counts are row-major; a storage never knows its
 * shape (reshape shares it). `where` names the caller in ERR_DISPOSED and ERR_SHAPE messages.
 */
export interface TensorStorage {
  readonly device: Device;
  readonly dtype: DType;
  /** Elements. */
  readonly length: number;
  /**
   * Writes made through this package (write, fill, copyFrom, markWritten): a layer that keeps a
   * derived copy (W_ext holds W, scaling·Bᵀ and Aᵀ) compares versions to know when to refresh it.
   */
  readonly version: number;
  /** The memory has been given back (the last tensor sharing it was disposed). */
  readonly released: boolean;
  /** The host float32 array that IS this storage (the CPU's), else null: no copy is ever implied. */
  readonly hostArray: Float32Array | null;
  /** The values as host float32: the storage itself where it is host float32, else a copy (a device waits for its queued work). Read-only for the caller. */
  hostView(where: string): Float32Array;
  /** A new host float32 array of the values, whatever the storage. */
  hostCopy(where: string): Float32Array;
  /** hostCopy without blocking the event loop where the copy waits for a device. */
  hostCopyAsync(where: string): Promise<Float32Array>;
  /** Overwrites every element with host float32 values (rounded to the dtype); a no-op copy when `values` is hostArray itself. */
  write(values: Float32Array, where: string): void;
  fill(value: number, where: string): void;
  /** Overwrites this storage with `src`'s elements (same backend), converting the dtype. */
  copyFrom(src: TensorStorage, where: string): void;
  /** Whether the two share any memory (an output must not overlap what the kernel reads). */
  overlaps(other: TensorStorage): boolean;
  /** Records a write made by a kernel (an optimizer step), so derived copies refresh. */
  markWritten(): void;
  /** One more tensor shares this storage (reshape). */
  retain(): this;
  /** One tensor less; the last gives the memory back (a host array is left to the GC). */
  release(): void;
  /** Bytes the storage occupies where it lives, where that is not length × the dtype's bytes (a quantized weight). */
  residentBytes?(): number;
  /** Set where the storage is a quantized weight ('int8', 'nf4'): only its layer's kernels read it. */
  readonly quantized?: string;
}

/** A checked argument: a live storage of the call's placement whose length matches the shape. */
export interface Operand {
  readonly storage: TensorStorage;
  readonly shape: readonly number[];
  /** Elements: the product of shape. */
  readonly n: number;
}

/** An input of shape (..., features), its leading dimensions flattened to M rows. */
export interface Rows extends Operand {
  readonly M: number;
}

export interface BackendStatus {
  /** It can compute in this process (an addon loaded and, for a device, a device answered). */
  available: boolean;
  /** Why not, when !available: no addon built, no driver, no device ("" when available). */
  reason: string;
  /** What answered, for messages ("CUDA device NVIDIA H200 (compute capability 9.0)"). */
  detail: string;
}

export interface Backend {
  /** The device its tensors report (tensor.device). */
  readonly device: Device;
  /** The dtypes its storage holds: a subset of those the dtype table allows on `device`. */
  readonly dtypes: readonly DType[];
  /** How messages name where it computes: 'the CPU', 'the CUDA device'. */
  readonly label: string;
  /** Whether it can run here, and why not (asked at each placement: cheap after the first call). */
  status(): BackendStatus;

  /** New storage of `length` elements, zeroed when asked (else whatever the memory held). ERR_BACKEND naming `arg` when it cannot be had. */
  alloc(where: string, arg: string, dtype: DType, length: number, zeroed: boolean): TensorStorage;
  /**
   * Storage holding host float32 `values`: the array itself where this backend's memory is host
   * float32 and `copy` is false (tensor() takes a Float32Array without a copy), else a copy in this
   * backend's memory, rounded to `dtype`.
   */
  fromHost(values: Float32Array, dtype: DType, copy: boolean): TensorStorage;
  /**
   * What a value that is not a Tensor is where a tensor is expected: the storage it is (a Float32Array
   * on the CPU, its shape implied by the call), or a LoraError naming `arg`: ERR_DTYPE for another
   * typed array, ERR_DEVICE for host memory given to a device (nothing moves behind the caller's back),
   * ERR_ARGUMENT for anything else.
   */
  adopt(where: string, arg: string, value: unknown, dtype: DType): TensorStorage;

  /** The frozen layer y = x·Wᵀ + b of this placement (one per Linear). */
  linear(spec: LinearSpec): LinearKernels;
  /** The LoRA layer over a frozen base of this placement (one per LinearLoRA: it owns the workspaces). */
  linearLoRA(spec: LinearLoRASpec): LinearLoRAKernels;
  /** Whether LinearLoRA's dropout on the LoRA path runs here (else training with dropout is refused). */
  readonly loraDropout: boolean;
  /** Many adapters over one frozen base (one per MultiLoRALinear: it owns the workspaces); null: not on this backend yet. */
  multiLoRALinear(spec: MultiLoRASpec): MultiLoRAKernels | null;

  readonly optimizers: OptimizerKernels;
  readonly losses: LossKernels;
  /** Elementwise activations with backward; null: not on this backend yet. */
  readonly activations: ActivationKernels | null;
  /** The LoRA kernels as plain functions, for frameworks with their own memory and autograd; null: not here yet. */
  readonly ops: OpsKernels | null;
}

// ---- layer kinds ---------------------------------------------------------------------------------------

/** float32 GEMMs on a device: 'tf32' (tensor cores) or 'exact' (fp32 FMA); no effect where there is no choice. */
export type MathMode = 'tf32' | 'exact';

export interface LinearSpec {
  readonly I: number;
  readonly O: number;
  /** The compute dtype of the frozen weight and the activations. */
  readonly dtype: DType;
  readonly math: MathMode;
}

/** y = x·Wᵀ + b: x (M, I), W (O, I) as nn.Linear stores it, b (O), y (M, O), all of the layer's placement. */
export interface LinearForward {
  readonly where: string;
  readonly x: Rows;
  readonly W: Operand;
  readonly bias: Operand | null;
  readonly y: Operand;
}

/** dx = dy·W: dy (M, O), dx (M, I). W gets no gradient: it is frozen. */
export interface LinearBackward {
  readonly where: string;
  readonly dy: Rows;
  readonly W: Operand;
  readonly dx: Operand;
}

/** What every layer kind computes: a forward and a backward of its checked calls, each with an async twin. */
export interface LayerKernels<F, B> {
  forward(c: F): void;
  /** forward without blocking the event loop: on a worker thread, or enqueued and waited for off the JS thread. */
  forwardAsync(c: F): Promise<void>;
  backward(c: B): void;
  backwardAsync(c: B): Promise<void>;
}

export type LinearKernels = LayerKernels<LinearForward, LinearBackward>;

export interface LinearLoRASpec extends LinearSpec {
  readonly r: number;
  /** false runs PEFT's unfused order of operations. */
  readonly fused: boolean;
  /** Seeds the dropout masks (a counter-based hash of seed, step and element). */
  readonly seed: number;
}

/** The layer's parameters for one call: W, b frozen in the compute dtype; A (I, r), B (r, O) float32 masters. */
export interface LoRAParams {
  readonly W: Operand;
  readonly bias: Operand | null;
  readonly A: Operand;
  readonly B: Operand;
  readonly scaling: number;
}

/** y = x·Wᵀ + b + scaling·(x̃·A)·B; x̃ = x ⊙ mask / (1 − dropout) while dropout > 0. */
export interface LoRAForward {
  readonly where: string;
  readonly x: Rows;
  readonly p: LoRAParams;
  readonly y: Operand;
  /** The dropout probability in effect: > 0 only in training mode, and only where loraDropout. */
  readonly dropout: number;
}

/**
 * Gradients for the last forward: dA += x̃ᵀ·ds, dB += scaling·sᵀ·dy with ds = scaling·dy·Bᵀ
 * (accumulated: the facade zeroes them between steps), and dx = dy·W + ds·Aᵀ (masked like x̃) unless
 * dx is null. `x` and `dropout` are the last forward's.
 */
export interface LoRABackward {
  readonly where: string;
  readonly x: Rows;
  readonly dy: Rows;
  readonly p: LoRAParams;
  readonly dA: Operand;
  readonly dB: Operand;
  readonly dx: Operand | null;
  readonly dropout: number;
}

/** forward keeps what backward needs (s = x̃·A, the mask) in the layer's workspaces. */
export interface LinearLoRAKernels extends LayerKernels<LoRAForward, LoRABackward> {
  /** The (M, I) dropout mask of the last forward with dropout (1 = kept), else null. */
  dropoutMask(M: number): Uint8Array | null;
  /** Drops what the last forward kept (after a merge; a new forward replaces it anyway). */
  forget(): void;
  /** Gives back the workspaces (the parameters belong to the facade). */
  dispose(): void;
}

/** A MultiLoRALinear's kernels: the frozen layer's sizes (each call brings its adapters). */
export type MultiLoRASpec = LinearSpec;

/** One adapter of a multi-adapter call, in the layer's order: A (I, r), B (r, O) float32 masters. */
export interface MultiLoRAAdapter {
  readonly A: Operand;
  readonly B: Operand;
  readonly r: number;
  readonly scaling: number;
  /** The dropout in effect on its rows: > 0 only in training mode, where it has rows. */
  readonly dropout: number;
  /** Its mask of this call is a pure function of (seed, step, element of its rows (n, I)), as a LinearLoRA's. */
  readonly seed: number;
  readonly step: number;
}

/**
 * y = x·Wᵀ + b on every row, plus scaling_i·(x̃·A_i)·B_i on the rows of adapter i. `index` (M) gives
 * each row's adapter (its position in `adapters`), or -1 for the frozen layer alone.
 */
export interface MultiLoRAForward {
  readonly where: string;
  readonly x: Rows;
  readonly W: Operand;
  readonly bias: Operand | null;
  readonly adapters: readonly MultiLoRAAdapter[];
  readonly index: Int32Array;
  readonly y: Operand;
}

/**
 * Gradients for the last forward (its x, adapters, dropout and rows): dA_i += x̃_iᵀ·ds_i and
 * dB_i += scaling_i·s_iᵀ·dy_i (accumulated), and dx = dy·W + ds_i·A_iᵀ on adapter i's rows unless null.
 */
export interface MultiLoRABackward {
  readonly where: string;
  readonly x: Rows;
  readonly dy: Rows;
  readonly W: Operand;
  readonly adapters: ReadonlyArray<MultiLoRAAdapter & { readonly dA: Operand; readonly dB: Operand }>;
  readonly dx: Operand | null;
}

/** forward groups the rows by adapter and keeps the grouping, s and the masks for backward. */
export interface MultiLoRAKernels extends LayerKernels<MultiLoRAForward, MultiLoRABackward> {
  /** Drops what the last forward kept. */
  forget(): void;
  /** Gives back the workspaces (the parameters belong to the facade). */
  dispose(): void;
}

// ---- training --------------------------------------------------------------------------------------------

/** One AdamW step's hyperparameters (torch.optim.AdamW; step counts from 1). */
export interface AdamWStep {
  lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; step: number;
}

/** One SGD step's hyperparameters (torch.optim.SGD); the momentum buffer is initialised on the first step. */
export interface SGDStep {
  lr: number; momentum: number; dampening: number; weightDecay: number; nesterov: boolean; firstStep: boolean;
}

/** Per-parameter updates in place. Storages are float32 and of one backend; the facade has checked them. */
export interface OptimizerKernels {
  adamw(param: TensorStorage, grad: TensorStorage, expAvg: TensorStorage, expAvgSq: TensorStorage, h: AdamWStep): void;
  /** null: SGD does not run on this backend yet. */
  readonly sgd: ((param: TensorStorage, grad: TensorStorage, momentumBuffer: TensorStorage | null, h: SGDStep) => void) | null;
}

export interface LossKernels {
  /** mean((y − target)²); writes 2·(y − target)/n into grad. The number waits for a device. */
  mse(where: string, y: Operand, target: Operand, grad: Operand): number;
  /** Mean over the M rows of −log softmax(logits)[label]; writes (softmax − onehot)/M into grad. Labels are checked in [0, C). */
  crossEntropy(where: string, logits: Operand, M: number, C: number, labels: Int32Array, grad: Operand): number;
}

export type ActivationKind = 'relu' | 'gelu';

export interface ActivationKernels {
  forward(kind: ActivationKind, x: Operand, y: Operand): void;
  backward(kind: ActivationKind, x: Operand, dy: Operand, dx: Operand): void;
}

/**
 * Dropout on the LoRA path of ops.*: the mask (M, I), 1 = kept, as host bytes (ops run on the CPU),
 * and x̃ = x ⊙ mask / (1 − p). Forward draws the mask from (seed, step) and writes both; backward
 * reads them (its seed and step are unused).
 */
export interface OpsDropout {
  readonly p: number;
  readonly seed: number;
  readonly step: number;
  readonly mask: Uint8Array;
  readonly xDrop: Operand;
}

/**
 * ops.loraForward: y = x·Wᵀ + b + scaling·(x̃·A)·B and s = x̃·A, into the given outputs. W is (O, I),
 * or (I, O) with fanInFanOut (then y = x·W + …), read in place.
 */
export interface OpsForward {
  readonly where: string;
  readonly M: number; readonly I: number; readonly O: number; readonly r: number;
  readonly x: Operand; readonly W: Operand; readonly bias: Operand | null; readonly A: Operand; readonly B: Operand;
  readonly fanInFanOut: boolean;
  readonly scaling: number;
  readonly fused: boolean;
  readonly dropout: OpsDropout | null;
  readonly s: Operand;
  readonly y: Operand;
}

/** ops.loraBackward: fresh dA, dB (not accumulated) and dx unless null; dropout is the forward's. */
export interface OpsBackward {
  readonly where: string;
  readonly M: number; readonly I: number; readonly O: number; readonly r: number;
  readonly x: Operand; readonly s: Operand; readonly dy: Operand; readonly W: Operand; readonly A: Operand; readonly B: Operand;
  readonly fanInFanOut: boolean;
  readonly scaling: number;
  readonly fused: boolean;
  readonly dropout: Omit<OpsDropout, 'seed' | 'step'> | null;
  readonly dx: Operand | null;
  readonly dA: Operand;
  readonly dB: Operand;
}

/** ops.loraForward and ops.loraBackward, and their async twins. */
export type OpsKernels = LayerKernels<OpsForward, OpsBackward>;

/**
 * Arithmetic the facades run on host float32 views whatever a tensor's backend, because it is rare or
 * small next to a step: merge (W ± scaling·(A·B)ᵀ), and the gradient norm of clipGradNorm over every
 * parameter together. The host backend (the CPU's) provides it; registry.ts hands it out.
 */
export interface HostKernels {
  /** W ± scaling·(A·B)ᵀ in place, in a fixed order; false, with W unchanged, when a result would not be finite. */
  merge(W: Float32Array, A: Float32Array, B: Float32Array, I: number, O: number, r: number, scaling: number, sign: 1 | -1): boolean;
  /** The total L2 norm (in double); multiplies every gradient by maxNorm / (norm + 1e-6) when that is below 1. */
  clipGradNorm(grads: Float32Array[], maxNorm: number, errorIfNonfinite: boolean): number;
}
