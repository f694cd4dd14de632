// Linear: the frozen layer, y = x·Wᵀ + b, W (O, I) as PyTorch's nn.Linear stores it. It lives where
// its weight does: on the CPU (float32), or on the CUDA device in float32, bfloat16 or float16
// (lib/device/linear.ts computes it there).
import { native } from './backends/cpu/binding';
import { Device, DType } from './dtype';
import { deviceLinearBackward, deviceLinearForward, deviceLinearOf, MathMode } from './backends/cuda/linear';
import { placeParameter, uploadParameter } from './params';
import { place } from './placement';
import { whenDeviceDone } from './backends/cuda/sync';
import { output, resolveExact, resolveRows, TensorLike } from './inputs';
import { Random, randomSeed } from './random';
import { Tensor } from './tensor';
import { fail } from './errors';
import { checkDim, checkFinite, checkOptions, checkSeed, optionKeys } from './validate';

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
    const onDevice = opts.weight instanceof Tensor && opts.weight.device === 'cuda';
    const { device, dtype } = place(where, ['options.device', 'options.dtype'], opts.device, opts.dtype,
      onDevice ? { device: 'cuda', dtype: (opts.weight as Tensor).dtype } : {});
    this.device = device;
    this.dtype = dtype;
    if (opts.math !== undefined && opts.math !== 'tf32' && opts.math !== 'exact') fail('ERR_ARGUMENT', where, 'options.math', "'tf32' or 'exact'", opts.math);
    this.math = opts.math ?? 'tf32';
    const rng = new Random(opts.seed === undefined ? randomSeed() : checkSeed(where, opts.seed));
    const bound = 1 / Math.sqrt(I);
    if (device === 'cuda') {
      this.weight = opts.weight !== undefined
        ? placeParameter(where, 'options.weight', opts.weight, [O, I], dtype, false)
        : uploadParameter(rng.fillUniform(new Float32Array(O * I), bound), [O, I], dtype);
      this.bias = opts.bias === undefined || opts.bias === false ? null
        : opts.bias === true ? uploadParameter(rng.fillUniform(new Float32Array(O), bound), [O], dtype)
          : placeParameter(where, 'options.bias', opts.bias, [O], dtype, false);
      return;
    }
    // On the CPU: a cuda weight or bias given with device: 'cpu' comes back to the host (a copy).
    const weight = opts.weight instanceof Tensor && opts.weight.device === 'cuda' ? opts.weight.to('cpu') : opts.weight;
    const biasIn = opts.bias instanceof Tensor && opts.bias.device === 'cuda' ? opts.bias.to('cpu') : opts.bias;
    if (weight !== undefined) {
      const w = resolveExact(where, 'options.weight', weight, [O, I]);
      checkFinite(where, 'options.weight', w.data);
      this.weight = weight instanceof Tensor ? weight : new Tensor(w.data, [O, I]);
    } else {
      this.weight = new Tensor(rng.fillUniform(new Float32Array(O * I), bound), [O, I]);
    }
    if (biasIn === undefined || biasIn === false) {
      this.bias = null;
    } else if (biasIn === true) {
      this.bias = new Tensor(rng.fillUniform(new Float32Array(O), bound), [O]);
    } else {
      const b = resolveExact(where, 'options.bias', biasIn, [O]);
      checkFinite(where, 'options.bias', b.data);
      this.bias = biasIn instanceof Tensor ? biasIn : new Tensor(b.data, [O]);
    }
  }

  /** y = x·Wᵀ + b for x of shape (..., I); y has shape (..., O). */
  forward(x: TensorLike, options?: OutOptions): Tensor {
    if (this.device === 'cuda') return this.#deviceForward('Linear.forward', x, options);
    const { args, y } = this.#forwardArgs('Linear.forward', x, options);
    native.linearForward(args);
    return y;
  }

  async forwardAsync(x: TensorLike, options?: OutOptions): Promise<Tensor> {
    if (this.device === 'cuda') return whenDeviceDone(this.#deviceForward('Linear.forwardAsync', x, options));
    const { args, y } = this.#forwardArgs('Linear.forwardAsync', x, options);
    await native.linearForwardAsync(args);
    return y;
  }

  /** dx = dy·W for dy of shape (..., O): the gradient passed down; W itself gets none (frozen). */
  backward(dy: TensorLike, options?: OutOptions): Tensor {
    if (this.device === 'cuda') return this.#deviceBackward('Linear.backward', dy, options);
    const { args, dx } = this.#backwardArgs('Linear.backward', dy, options);
    native.linearBackward(args);
    return dx;
  }

  async backwardAsync(dy: TensorLike, options?: OutOptions): Promise<Tensor> {
    if (this.device === 'cuda') return whenDeviceDone(this.#deviceBackward('Linear.backwardAsync', dy, options));
    const { args, dx } = this.#backwardArgs('Linear.backwardAsync', dy, options);
    await native.linearBackwardAsync(args);
    return dx;
  }

  /** Frozen parameters: O·I (+ O with a bias). */
  numParameters(): number {
    return this.outFeatures * this.inFeatures + (this.bias ? this.outFeatures : 0);
  }

  dispose(): void {
    this.weight.dispose();
    this.bias?.dispose();
  }

  #deviceForward(where: string, x: TensorLike, options: OutOptions | undefined): Tensor {
    const opts = checkOptions(where, options, OUT_KEYS);
    return deviceLinearForward(where, deviceLinearOf(this), x, opts.out);
  }

  #deviceBackward(where: string, dy: TensorLike, options: OutOptions | undefined): Tensor {
    const opts = checkOptions(where, options, OUT_KEYS);
    return deviceLinearBackward(where, deviceLinearOf(this), dy, opts.out);
  }

  #forwardArgs(where: string, x: TensorLike, options: OutOptions | undefined) {
    const opts = checkOptions(where, options, OUT_KEYS);
    const { I, O } = { I: this.inFeatures, O: this.outFeatures };
    const xin = resolveRows(where, 'x', x, I);
    const W = this.weight.buffer(`${where}: weight`);
    const bias = this.bias ? this.bias.buffer(`${where}: bias`) : null;
    const y = output(where, opts.out, [...xin.shape.slice(0, -1), O], [['x', xin.data], ['weight', W], ['bias', bias]]);
    const args = { M: xin.M, I, O, x: xin.data, W, bias, y: y.buffer() };
    return { args, y };
  }

  #backwardArgs(where: string, dy: TensorLike, options: OutOptions | undefined) {
    const opts = checkOptions(where, options, OUT_KEYS);
    const { I, O } = { I: this.inFeatures, O: this.outFeatures };
    const d = resolveRows(where, 'dy', dy, O);
    const W = this.weight.buffer(`${where}: weight`);
    const dx = output(where, opts.out, [...d.shape.slice(0, -1), I], [['dy', d.data], ['weight', W]]);
    return { args: { M: d.M, I, O, dy: d.data, W, dx: dx.buffer() }, dx };
  }
}

export function checkLinear(where: string, base: unknown): Linear {
  if (!(base instanceof Linear)) fail('ERR_ARGUMENT', where, 'base', 'a Linear', base);
  return base;
}
