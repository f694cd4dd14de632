// Linear: the frozen layer, y = x·Wᵀ + b, W (O, I) as PyTorch's nn.Linear stores it.
import { native } from './binding';
import { output, resolveExact, resolveRows, TensorLike } from './inputs';
import { Random, randomSeed } from './random';
import { Tensor } from './tensor';
import { checkDim, checkFinite, checkOptions, checkSeed, fail } from './validate';

export interface LinearOptions {
  /** (O, I), row-major; default U(±1/√I), as PyTorch initialises nn.Linear. */
  weight?: TensorLike;
  /** (O); `true` draws U(±1/√I) like PyTorch; absent or `false` means no bias. */
  bias?: TensorLike | boolean;
  /** Seed for the default initialisation. */
  seed?: number;
}

export interface OutOptions {
  /** Write the result into this tensor instead of a new one (its shape must match). */
  out?: Tensor;
}

export class Linear {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly weight: Tensor;
  readonly bias: Tensor | null;

  constructor(inFeatures: number, outFeatures: number, options?: LinearOptions) {
    const where = 'Linear';
    const I = checkDim(where, 'inFeatures', inFeatures);
    const O = checkDim(where, 'outFeatures', outFeatures);
    const opts = checkOptions<LinearOptions>(where, options);
    this.inFeatures = I;
    this.outFeatures = O;
    const rng = new Random(opts.seed === undefined ? randomSeed() : checkSeed(where, opts.seed));
    const bound = 1 / Math.sqrt(I);
    if (opts.weight !== undefined) {
      const w = resolveExact(where, 'options.weight', opts.weight, [O, I]);
      checkFinite(where, 'options.weight', w.data);
      this.weight = opts.weight instanceof Tensor ? opts.weight : new Tensor(w.data, [O, I]);
    } else {
      this.weight = new Tensor(rng.fillUniform(new Float32Array(O * I), bound), [O, I]);
    }
    if (opts.bias === undefined || opts.bias === false) {
      this.bias = null;
    } else if (opts.bias === true) {
      this.bias = new Tensor(rng.fillUniform(new Float32Array(O), bound), [O]);
    } else {
      const b = resolveExact(where, 'options.bias', opts.bias, [O]);
      checkFinite(where, 'options.bias', b.data);
      this.bias = opts.bias instanceof Tensor ? opts.bias : new Tensor(b.data, [O]);
    }
  }

  /** y = x·Wᵀ + b for x of shape (..., I); y has shape (..., O). */
  forward(x: TensorLike, options?: OutOptions): Tensor {
    const { args, y } = this.#forwardArgs('Linear.forward', x, options);
    native.linearForward(args);
    return y;
  }

  async forwardAsync(x: TensorLike, options?: OutOptions): Promise<Tensor> {
    const { args, y } = this.#forwardArgs('Linear.forwardAsync', x, options);
    await native.linearForwardAsync(args);
    return y;
  }

  /** dx = dy·W for dy of shape (..., O): the gradient passed down; W itself gets none (frozen). */
  backward(dy: TensorLike, options?: OutOptions): Tensor {
    const { args, dx } = this.#backwardArgs('Linear.backward', dy, options);
    native.linearBackward(args);
    return dx;
  }

  async backwardAsync(dy: TensorLike, options?: OutOptions): Promise<Tensor> {
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

  #forwardArgs(where: string, x: TensorLike, options: OutOptions | undefined) {
    const opts = checkOptions<OutOptions>(where, options);
    const { I, O } = { I: this.inFeatures, O: this.outFeatures };
    const xin = resolveRows(where, 'x', x, I);
    const y = output(where, opts.out, [...xin.shape.slice(0, -1), O]);
    const args = {
      M: xin.M, I, O, x: xin.data, W: this.weight.buffer(`${where}: weight`),
      bias: this.bias ? this.bias.buffer(`${where}: bias`) : null, y: y.buffer(),
    };
    return { args, y };
  }

  #backwardArgs(where: string, dy: TensorLike, options: OutOptions | undefined) {
    const opts = checkOptions<OutOptions>(where, options);
    const { I, O } = { I: this.inFeatures, O: this.outFeatures };
    const d = resolveRows(where, 'dy', dy, O);
    const dx = output(where, opts.out, [...d.shape.slice(0, -1), I]);
    return { args: { M: d.M, I, O, dy: d.data, W: this.weight.buffer(`${where}: weight`), dx: dx.buffer() }, dx };
  }
}

export function checkLinear(where: string, base: unknown): Linear {
  if (!(base instanceof Linear)) fail('ERR_ARGUMENT', where, 'base', 'a Linear', base);
  return base;
}
