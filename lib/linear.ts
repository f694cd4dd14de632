// Linear: the frozen layer, y = x·Wᵀ + b, W (O, I) as PyTorch's nn.Linear stores it. It lives where
// its weight does, chosen once at construction: on the CPU (float32), or on the CUDA device in
// float32, bfloat16 or float16. This class checks; its backend's LinearKernels compute.
import type { LinearBackward, LinearForward, LinearKernels, MathMode, Operand } from './backends/backend';
import { backendFor } from './backends/registry';
import { Call, run, runAsync } from './call';
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
}
const LINEAR_KEYS = optionKeys<LinearOptions>({ weight: true, bias: true, seed: true, device: true, dtype: true, math: true });

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
  /** The compute dtype (always float32 on the CPU). */
  readonly dtype: DType;
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
    const rng = new Random(opts.seed === undefined ? randomSeed() : checkSeed(where, opts.seed));
    const bound = 1 / Math.sqrt(I);
    this.weight = opts.weight !== undefined
      ? placeParameter(where, 'options.weight', opts.weight, [O, I], p, false)
      : newParameter(rng.fillUniform(new Float32Array(O * I), bound), [O, I], p);
    this.bias = opts.bias === undefined || opts.bias === false ? null
      : opts.bias === true ? newParameter(rng.fillUniform(new Float32Array(O), bound), [O], p)
        : placeParameter(where, 'options.bias', opts.bias, [O], p, false);
    kernelsOf.set(this, backendFor(p).linear({ I, O, dtype: p.dtype, math: this.math }));
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

/** The kernels of a Linear's backend. */
export function linearKernels(l: Linear): LinearKernels {
  return kernelsOf.get(l)!;
}

/** The frozen weight and bias as operands of the layer's placement, checked at every use; `prefix` names them ('base.' in a LinearLoRA). */
export function frozenParams(where: string, l: Linear, prefix: string): { W: Operand; bias: Operand | null } {
  const on = placementOf(l);
  return {
    W: exact(where, `${prefix}weight`, l.weight, [l.outFeatures, l.inFeatures], on),
    bias: l.bias ? exact(where, `${prefix}bias`, l.bias, [l.outFeatures], on) : null,
  };
}

export function checkLinear(where: string, base: unknown): Linear {
  if (!(base instanceof Linear)) fail('ERR_ARGUMENT', where, 'base', 'a Linear', base);
  return base;
}
