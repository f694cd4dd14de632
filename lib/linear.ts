// Linear: the frozen layer, y = x·Wᵀ + b, W (O, I) as PyTorch's nn.Linear stores it. It lives where
// its weight does, chosen once at construction: on the CPU in float32 or bfloat16, or on the CUDA
// device in float32, bfloat16 or float16; on the CPU its weight may be quantized (int8, nf4), held
// compressed. This class checks; its backend's LinearKernels compute.
import type { Backend, LinearBackward, LinearForward, LinearKernels, MathMode, Operand } from './backends/backend';
import { cpuQuantizedKernels, QuantStorage } from './backends/cpu-lowp';
import { backendFor, HOST } from './backends/registry';
import { Call, run, runAsync } from './call';
import { elementBytes } from './dtype';
import type { Device, DType } from './dtype';
import { fail } from './errors';
import { exact, output, rows, TensorLike, withLast } from './operands';
import { newParameter, placeParameter } from './params';
import { place, placementOf } from './placement';
import { Random, randomSeed } from './random';
import { Tensor } from './tensor';
import { checkDim, checkOptions, checkSeed, optionKeys } from './validate';

export type { MathMode };

export interface LinearOptions {
  /** (O, I), row-major; default U(±1/√I), as PyTorch initialises nn.Linear. */
  weight?: TensorLike;
  /** (O); `true` draws U(±1/√I) like PyTorch; absent or `false` means no bias. */
  bias?: TensorLike | boolean;
  /** Seed for the default initialisation. */
  seed?: number;
  /**
   * 'cpu', 'cuda' or 'auto' (CUDA where a device answers, else the CPU). Default: where `weight`
   * is (a cuda tensor puts the layer on the device), else the CPU. Host values are uploaded.
   */
  device?: Device | 'auto';
  /** The compute dtype on the device: 'float32', 'bfloat16' or 'float16' (default: weight's, else float32). */
  dtype?: DType;
  /** float32 GEMMs on the device: 'tf32' (tensor cores, the default) or 'exact' (fp32 FMA). */
  math?: MathMode;
  /**
   * Holds the frozen weight quantized, on the CPU: 'int8' (one fp32 scale per output channel,
   * max|W[o, :]| / 127) or 'nf4' (QLoRA's NormalFloat4, blocks of 64 along I with an fp32 absmax
   * each; I must be a multiple of 64). `dtype` is then the activations' ('float32' or 'bfloat16').
   */
  quantize?: Quantize;
}
export type Quantize = 'int8' | 'nf4';
const LINEAR_KEYS = optionKeys<LinearOptions>({ weight: true, bias: true, seed: true, device: true, dtype: true, math: true, quantize: true });

/** What builds a Linear's kernels, and a LinearLoRA's or MultiLoRALinear's over it: its placement's backend, or the quantized kernels. */
type LayerBackend = Pick<Backend, 'linear' | 'linearLoRA' | 'multiLoRALinear' | 'loraDropout' | 'label'>;
const backendOfLayer = new WeakMap<Linear, LayerBackend>();

export interface OutOptions {
  /** Write the result into this tensor instead of a new one (its shape must match). */
  out?: Tensor;
}
export const OUT_KEYS = optionKeys<OutOptions>({ out: true });

/** Each Linear's kernels, for the LinearLoRA over it (a merged layer runs its base's forward). */
const kernelsOf = new WeakMap<Linear, LinearKernels>();

export class Linear {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  /** Where the layer computes: 'cpu' or 'cuda'. */
  readonly device: Device;
  /** The compute dtype: of the activations, and of the weight unless it is quantized. */
  readonly dtype: DType;
  /** The weight's quantized format, or null when it is held in `dtype`. */
  readonly quantize: Quantize | null;
  /** float32 GEMMs on the device: 'tf32' or 'exact' (no effect on the CPU or in 16-bit dtypes). */
  readonly math: MathMode;

  constructor(inFeatures: number, outFeatures: number, options?: LinearOptions) {
    const where = 'Linear';
    const I = checkDim(where, 'inFeatures', inFeatures);
    const O = checkDim(where, 'outFeatures', outFeatures);
    const opts = checkOptions(where, options, LINEAR_KEYS);
    this.inFeatures = I;
    this.outFeatures = O;
    const w = opts.weight instanceof Tensor ? opts.weight : null;
    const p = place(where, ['options.device', 'options.dtype'], opts.device, opts.dtype, w ? { device: w.device, dtype: w.dtype } : {});
    this.device = p.device;
    this.dtype = p.dtype;
    if (opts.math !== undefined && opts.math !== 'tf32' && opts.math !== 'exact') fail('ERR_ARGUMENT', where, 'options.math', "'tf32' or 'exact'", opts.math);
    this.math = opts.math ?? 'tf32';
    const q = opts.quantize === undefined ? null : checkQuantize(where, opts.quantize, p.device, I);
    this.quantize = q;
    const rng = new Random(opts.seed === undefined ? randomSeed() : checkSeed(where, opts.seed));
    const bound = 1 / Math.sqrt(I);
    if (q !== null) {
      // Quantized from host float32 values: the given weight's (checked finite), or the default draw.
      const values = opts.weight !== undefined
        ? placeParameter(where, 'options.weight', opts.weight, [O, I], HOST, false).hostView(where)
        : rng.fillUniform(new Float32Array(O * I), bound);
      this.weight = new Tensor(QuantStorage.quantize(q, p.dtype, values, O, I), [O, I]);
    } else {
      this.weight = opts.weight !== undefined
        ? placeParameter(where, 'options.weight', opts.weight, [O, I], p, false)
        : newParameter(rng.fillUniform(new Float32Array(O * I), bound), [O, I], p);
    }
    this.bias = opts.bias === undefined || opts.bias === false ? null
      : opts.bias === true ? newParameter(rng.fillUniform(new Float32Array(O), bound), [O], p)
        : placeParameter(where, 'options.bias', opts.bias, [O], p, false);
    const backend: LayerBackend = q !== null ? cpuQuantizedKernels : backendFor(p);
    backendOfLayer.set(this, backend);
    kernelsOf.set(this, backend.linear({ I, O, dtype: p.dtype, math: this.math }));
  }

  /**
   * Bytes the frozen weight and bias occupy where they live, as stored: 4 per element in float32, 2 in
   * bfloat16, about 1 in int8 (plus a scale per output) and 0.56 in nf4 (a code per half byte plus an
   * absmax per 64).
   */
  frozenBytes(): { weight: number; bias: number; total: number } {
    const bytes = (t: Tensor | null) => (t === null ? 0 : residentBytes(t));
    const weight = bytes(this.weight), bias = bytes(this.bias);
    return { weight, bias, total: weight + bias };
  }

  /** y = x·Wᵀ + b for x of shape (..., I); y has shape (..., O). */
  forward(x: TensorLike, options?: OutOptions): Tensor {
    return run(this.#forwardCall('Linear.forward', x, options), (c) => linearKernels(this).forward(c));
  }

  forwardAsync(x: TensorLike, options?: OutOptions): Promise<Tensor> {
    return runAsync(() => this.#forwardCall('Linear.forwardAsync', x, options), (c) => linearKernels(this).forwardAsync(c));
  }

  /** dx = dy·W for dy of shape (..., O): the gradient passed down; W itself gets none (frozen). */
  backward(dy: TensorLike, options?: OutOptions): Tensor {
    return run(this.#backwardCall('Linear.backward', dy, options), (c) => linearKernels(this).backward(c));
  }

  backwardAsync(dy: TensorLike, options?: OutOptions): Promise<Tensor> {
    return runAsync(() => this.#backwardCall('Linear.backwardAsync', dy, options), (c) => linearKernels(this).backwardAsync(c));
  }

  /** Frozen parameters: O·I (+ O with a bias). */
  numParameters(): number {
    return this.outFeatures * this.inFeatures + (this.bias ? this.outFeatures : 0);
  }

  dispose(): void {
    this.weight.dispose();
    this.bias?.dispose();
  }

  #forwardCall(where: string, x: TensorLike, options: OutOptions | undefined): Call<LinearForward, Tensor> {
    const opts = checkOptions(where, options, OUT_KEYS);
    const on = placementOf(this);
    const xin = rows(where, 'x', x, this.inFeatures, on);
    const { W, bias } = frozenParams(where, this, '');
    const y = output(where, opts.out, withLast(xin.shape, this.outFeatures), on, [['x', xin], ['weight', W], ['bias', bias]]);
    return { c: { where, x: xin, W, bias, y: y.op }, result: y.tensor };
  }

  #backwardCall(where: string, dy: TensorLike, options: OutOptions | undefined): Call<LinearBackward, Tensor> {
    const opts = checkOptions(where, options, OUT_KEYS);
    const on = placementOf(this);
    const d = rows(where, 'dy', dy, this.outFeatures, on);
    const { W } = frozenParams(where, this, '');
    const dx = output(where, opts.out, withLast(d.shape, this.inFeatures), on, [['dy', d], ['weight', W]]);
    return { c: { where, dy: d, W, dx: dx.op }, result: dx.tensor };
  }
}

/** What makes the kernels of a LinearLoRA over `l`: its weight's format decides, as for `l` itself. */
export function layerBackend(l: Linear): LayerBackend {
  return backendOfLayer.get(l)!;
}

function checkQuantize(where: string, v: unknown, device: Device, I: number): Quantize {
  if (v !== 'int8' && v !== 'nf4') fail('ERR_ARGUMENT', where, 'options.quantize', "'int8' or 'nf4'", v);
  if (device !== 'cpu') fail('ERR_DEVICE', where, 'options.device', "'cpu' for a quantized weight", device, 'quantized weights run on the CPU only for now');
  if (v === 'nf4' && I % 64 !== 0) fail('ERR_SHAPE', where, 'inFeatures', 'a multiple of 64 for nf4 (its blocks of 64 run along I)', I);
  return v;
}

function residentBytes(t: Tensor): number {
  const s = t.storage('Linear.frozenBytes');
  return s.residentBytes ? s.residentBytes() : s.length * elementBytes(s.dtype);
}

/** The kernels of a Linear's backend. */
export function linearKernels(l: Linear): LinearKernels {
  return kernelsOf.get(l)!;
}

/** The frozen weight and bias as operands of the layer's placement, checked at every use; `prefix` names them ('base.' in a LinearLoRA). */
export function frozenParams(where: string, l: Linear, prefix: string): { W: Operand; bias: Operand | null } {
  const on = placementOf(l);
  return {
    W: exact(where, `${prefix}weight`, l.weight, [l.outFeatures, l.inFeatures], on, l.quantize !== null),
    bias: l.bias ? exact(where, `${prefix}bias`, l.bias, [l.outFeatures], on) : null,
  };
}

export function checkLinear(where: string, base: unknown): Linear {
  if (!(base instanceof Linear)) fail('ERR_ARGUMENT', where, 'base', 'a Linear', base);
  return base;
}
