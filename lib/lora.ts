// LoRA: the trainable pair. A (I, r) starts as kaiming-uniform(a = √5) with fan_in = I, which is
// U(±1/√I) (PEFT's default, via nn.Linear's reset_parameters); B (r, O) starts at zero, so a fresh
// adapter changes nothing. scaling = alpha / r, or alpha / √r with rsLoRA. A, B and their gradients
// are float32 tensors (the masters) where the layer lives, whatever its compute dtype.
import type { Placement } from './backends/backend';
import { Device } from './dtype';
import { zeroGrads } from './grad';
import type { TensorLike } from './operands';
import { newParameter, placeParameter } from './params';
import { placeDevice } from './placement';
import { Random, randomSeed } from './random';
import { Tensor, zeros } from './tensor';
import { checkBoolean, checkDim, checkFiniteNumber, checkOptions, checkSeed, optionKeys } from './validate';

export interface LoRAOptions {
  /** Default r, so scaling starts at 1. */
  alpha?: number;
  /** rsLoRA: scaling = alpha / √r instead of alpha / r. */
  rslora?: boolean;
  /** Seed for A's initialisation. */
  seed?: number;
  /** Initial A (I, r), our layout. */
  A?: TensorLike;
  /** Initial B (r, O), our layout. */
  B?: TensorLike;
  /** 'cpu' (default), 'cuda' or 'auto': where A, B and their gradients live (float32 either way). */
  device?: Device | 'auto';
}
const LORA_KEYS = optionKeys<LoRAOptions>({ alpha: true, rslora: true, seed: true, A: true, B: true, device: true });

/** LoRA.configure's options. */
const CONFIGURE_KEYS = optionKeys<{ alpha?: number; rslora?: boolean }>({ alpha: true, rslora: true });

export class LoRA {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly rank: number;
  readonly A: Tensor;
  readonly B: Tensor;
  readonly device: Device;
  #alpha: number;
  #rslora: boolean;

  constructor(inFeatures: number, outFeatures: number, rank: number, options?: LoRAOptions) {
    const where = 'LoRA';
    const I = checkDim(where, 'inFeatures', inFeatures);
    const O = checkDim(where, 'outFeatures', outFeatures);
    const r = checkDim(where, 'rank', rank);
    const opts = checkOptions(where, options, LORA_KEYS);
    this.inFeatures = I;
    this.outFeatures = O;
    this.rank = r;
    this.#alpha = r;
    this.#rslora = false;
    this.configure({ alpha: opts.alpha, rslora: opts.rslora });
    const seed = opts.seed === undefined ? randomSeed() : checkSeed(where, opts.seed);
    const device = placeDevice(where, 'options.device', opts.device).device;
    const on: Placement = { device, dtype: 'float32' };
    this.device = device;
    this.A = opts.A === undefined
      ? newParameter(new Random(seed).fillUniform(new Float32Array(I * r), 1 / Math.sqrt(I)), [I, r], on)
      : placeParameter(where, 'options.A', opts.A, [I, r], on, true);
    this.B = opts.B === undefined ? newParameter(new Float32Array(r * O), [r, O], on) : placeParameter(where, 'options.B', opts.B, [r, O], on, true);
    this.A.grad = zeros([I, r], { device });
    this.B.grad = zeros([r, O], { device });
  }

  get alpha(): number {
    return this.#alpha;
  }

  get rslora(): boolean {
    return this.#rslora;
  }

  /** alpha / r, or alpha / √r with rsLoRA. */
  get scaling(): number {
    return this.#rslora ? this.#alpha / Math.sqrt(this.rank) : this.#alpha / this.rank;
  }

  /** Changes alpha and rsLoRA (as loading an adapter does); absent fields keep their value. */
  configure(options: { alpha?: number; rslora?: boolean }): void {
    const where = 'LoRA.configure';
    const opts = checkOptions(where, options, CONFIGURE_KEYS);
    const alpha = opts.alpha === undefined ? this.#alpha : checkFiniteNumber(where, 'alpha', opts.alpha);
    const rslora = opts.rslora === undefined ? this.#rslora : checkBoolean(where, 'rslora', opts.rslora);
    this.#alpha = alpha;
    this.#rslora = rslora;
  }

  /** [A, B]: the trainable parameters, each with a .grad of its shape. */
  parameters(): Tensor[] {
    return [this.A, this.B];
  }

  /** r·(I + O). */
  numTrainable(): number {
    return this.rank * (this.inFeatures + this.outFeatures);
  }

  zeroGrad(): void {
    zeroGrads('LoRA.zeroGrad', [this.A, this.B], (i) => (i === 0 ? 'A' : 'B'));
  }

  dispose(): void {
    this.A.dispose();
    this.B.dispose();
  }
}
