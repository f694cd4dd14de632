// LoRADense: a tf.layers.Layer that wraps a Dense layer, frozen, with a trainable rank-r adapter,
// y = activation(x·kernel + bias + scaling·(x̃·A)·B), computed by loraLinear (the fused op). A
// (I, r) starts as ours does, kaiming-uniform U(±1/√I) from the seed (the same values as a
// LinearLoRA with that seed), B (r, O) at zero, so a new layer equals its Dense. Dropout p applies
// to the LoRA path's input in training only (the `training` kwarg, as tfjs's Dropout layer).
//
// Its weights are A and B (trainable) and the Dense's kernel and bias (non-trainable), so
// model.save keeps all four, an optimizer sees only the adapter, and getConfig holds the Dense's
// own config (serialised with it, registered as 'LoRADense').
import type { DataType, serialization, Tensor } from '@tensorflow/tfjs-core';
import type { LayerArgs } from '@tensorflow/tfjs-layers/dist/engine/topology';
import type { Kwargs } from '@tensorflow/tfjs-layers/dist/types';
import type * as TfLayers from '@tensorflow/tfjs-layers';
import { fail, said } from '../errors';
import type { AdapterLayer, AdapterSettings, AdapterValues } from '../io/adapter-layer';
import { Random, randomSeed } from '../random';
import { checkBoolean, checkDim, checkDropout, checkFiniteNumber, checkOptions, checkSeed, optionKeys } from '../validate';
import { loraLinear } from './op';
import { needLayers, tf, tfLayers } from './peer';

type Layer = TfLayers.layers.Layer;
type LayerVariable = TfLayers.LayerVariable;
type Shape = Array<number | null>;

export interface LoRADenseArgs {
  /** The Dense layer to wrap (tf.layers.dense(...), built or not). It is frozen from here on, and owned by this layer. */
  layer: Layer;
  rank: number;
  /** Default rank (scaling 1). */
  alpha?: number;
  /** rsLoRA: scaling = alpha / √rank. */
  rslora?: boolean;
  /** Dropout on the LoRA path's input, in [0, 1), in training only. */
  dropout?: number;
  /** Seeds A's initialisation and the dropout masks. */
  seed?: number;
  // The Layer's own arguments that a LoRADense takes (and that its config holds).
  name?: string;
  trainable?: boolean;
  inputShape?: Shape;
  batchInputShape?: Shape;
  batchSize?: number;
  dtype?: DataType;
}
export const LORA_DENSE_KEYS = optionKeys<LoRADenseArgs>({
  layer: true, rank: true, alpha: true, rslora: true, dropout: true, seed: true,
  name: true, trainable: true, inputShape: true, batchInputShape: true, batchSize: true, dtype: true,
});

/** The adapter's settings, which getConfig records and applyLoRA passes. */
export type LoRASettings = Pick<LoRADenseArgs, 'rank' | 'alpha' | 'rslora' | 'dropout' | 'seed'>;

// Without tfjs-layers there is no Layer to extend: a LoRADense then refuses to be made, naming the package.
const LayerBase: typeof TfLayers.layers.Layer = tfLayers?.layers.Layer ?? (class {
  constructor() {
    needLayers('LoRADense');
  }
} as unknown as typeof TfLayers.layers.Layer);

/** A Dense layer's parts we read: its config and, once built, its kernel, bias and activation. */
interface DenseParts {
  units: number;
  useBias: boolean;
  kernel: LayerVariable;
  bias: LayerVariable | null;
  /** By its name in the Dense's config ('relu', 'gelu', ...); null for 'linear'. */
  activation: { name: string; apply(t: Tensor): Tensor } | null;
}

const shapeText = (shape: Shape) => `[${shape.map((d) => d ?? 'None').join(', ')}]`;

function isDense(v: unknown): v is Layer {
  return tfLayers !== null && v instanceof tfLayers.layers.Layer && v.getClassName() === 'Dense';
}

export class LoRADense extends LayerBase implements AdapterLayer {
  static className = 'LoRADense';
  /** The wrapped Dense (frozen). */
  readonly dense: Layer;
  readonly rank: number;
  readonly dropout: number;
  readonly seed: number;
  #alpha: number;
  #rslora: boolean;
  #A: LayerVariable | null = null;
  #B: LayerVariable | null = null;
  #frozen: DenseParts | null = null;
  /** The dropout masks' seed, and the training calls that drew one (each a new mask). */
  readonly #dropoutSeed: number;
  readonly #aSeed: number;
  #step = 0;

  constructor(args: LoRADenseArgs) {
    const where = 'LoRADense';
    needLayers(where);
    const opts = checkOptions(where, args, LORA_DENSE_KEYS, 'args');
    if (!isDense(opts.layer)) fail('ERR_ARGUMENT', where, 'args.layer', 'a tf.layers.dense layer', opts.layer);
    // Every check before anything changes (super() names a layer; the Dense is frozen below).
    const rank = checkDim(where, 'args.rank', opts.rank);
    const seed = opts.seed === undefined ? randomSeed() : checkSeed(where, opts.seed);
    const alpha = opts.alpha === undefined ? rank : checkFiniteNumber(where, 'args.alpha', opts.alpha);
    const rslora = opts.rslora === undefined ? false : checkBoolean(where, 'args.rslora', opts.rslora);
    const dropout = opts.dropout === undefined ? 0 : checkDropout(where, opts.dropout);
    const dense = opts.layer;
    // The first layer of a tf.sequential needs its input shape: the Dense's, when it was given one.
    const denseConfig = dense.getConfig();
    const batchInputShape = opts.batchInputShape ?? (opts.inputShape === undefined ? (denseConfig.batchInputShape as Shape | undefined) : undefined);
    // Named as the Dense it wraps by default: its weights keep their names ("<name>/kernel").
    super({
      name: opts.name ?? dense.name, trainable: opts.trainable, inputShape: opts.inputShape, batchInputShape, batchSize: opts.batchSize, dtype: opts.dtype,
    } as LayerArgs);
    this.dense = dense;
    this.dense.trainable = false;
    this.rank = rank;
    this.#alpha = alpha;
    this.#rslora = rslora;
    this.dropout = dropout;
    this.seed = seed;
    // As LinearLoRA draws them: A's seed, then the dropout masks'.
    const rng = new Random(seed);
    this.#aSeed = rng.nextSeed();
    this.#dropoutSeed = rng.nextSeed();
    this.supportsMasking = false;
  }

  get alpha(): number {
    return this.#alpha;
  }

  get rslora(): boolean {
    return this.#rslora;
  }

  /** alpha / rank, or alpha / √rank with rsLoRA. */
  get scaling(): number {
    return this.#rslora ? this.#alpha / Math.sqrt(this.rank) : this.#alpha / this.rank;
  }

  /** A (I, r), once built. */
  get loraA(): LayerVariable | null {
    return this.#A;
  }

  /** B (r, O), once built. */
  get loraB(): LayerVariable | null {
    return this.#B;
  }

  override build(inputShape: Shape | Shape[]): void {
    const shape = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as Shape;
    const I = shape[shape.length - 1];
    if (typeof I !== 'number') fail('ERR_SHAPE', 'LoRADense.build', 'inputShape', 'a known last dimension (..., I)', said(`shape ${shapeText(shape)}`));
    // Built here, inside this layer's name scope: its weights are "<this name>/kernel" and "/bias".
    if (!this.dense.built) {
      this.dense.build(shape);
      this.dense.built = true;
    }
    this.#frozen = this.#parts();
    const { units: O, kernel } = this.#frozen;
    if (kernel.shape[0] !== I) fail('ERR_SHAPE', 'LoRADense.build', 'inputShape', `a last dimension of ${kernel.shape[0]} (the Dense kernel's I)`, said(`shape ${shapeText(shape)}`));
    const r = this.rank;
    const zeros = needLayers('LoRADense').initializers.zeros();
    this.#A = this.addWeight('lora_A', [I, r], 'float32', zeros, undefined, true);
    this.#B = this.addWeight('lora_B', [r, O], 'float32', zeros, undefined, true);
    const A0 = new Random(this.#aSeed).fillUniform(new Float32Array(I * r), 1 / Math.sqrt(I));
    tf.tidy(() => {
      this.#A!.write(tf.tensor(A0, [I, r]));
    });
    this.inputSpec = [{ minNDim: 2, axes: { [-1]: I } }];
    this.built = true;
  }

  /** The Dense's kernel and bias (frozen), then the adapter when this layer is not trainable. */
  override get nonTrainableWeights(): LayerVariable[] {
    return [...this.dense.weights, ...super.nonTrainableWeights];
  }

  override set nonTrainableWeights(weights: LayerVariable[]) {
    super.nonTrainableWeights = weights;
  }

  override setFastWeightInitDuringBuild(value: boolean): void {
    // The Dense's weights are about to be loaded; A's seeded values cost I·r and are always made.
    this.dense.setFastWeightInitDuringBuild(value);
  }

  override computeOutputShape(inputShape: Shape | Shape[]): Shape {
    const shape = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as Shape;
    return [...shape.slice(0, -1), this.#units()];
  }

  override call(inputs: Tensor | Tensor[], kwargs: Kwargs): Tensor {
    return tf.tidy(() => {
      const x = Array.isArray(inputs) ? inputs[0] : inputs;
      const { kernel, bias, activation } = this.#frozen!;
      const training = kwargs.training === true && this.dropout > 0;
      // A ReLU runs inside the fused op (forward and gradient); any other activation as tfjs's op after it.
      const fusedRelu = activation?.name === 'relu';
      const y = loraLinear(x, kernel.read(), bias?.read() ?? null, this.#A!.read(), this.#B!.read(), {
        scaling: this.scaling, ...(training ? { dropout: this.dropout, seed: this.#dropoutSeed, step: this.#step++ } : {}),
        ...(fusedRelu ? { activation: 'relu' as const } : {}),
      });
      return activation && !fusedRelu ? activation.apply(y) : y;
    });
  }

  override getConfig(): serialization.ConfigDict {
    const settings: Required<LoRASettings> = { rank: this.rank, alpha: this.#alpha, rslora: this.#rslora, dropout: this.dropout, seed: this.seed };
    return { ...super.getConfig(), layer: { className: 'Dense', config: this.dense.getConfig() }, ...settings };
  }

  static override fromConfig<T extends serialization.Serializable>(
    cls: serialization.SerializableConstructor<T>, config: serialization.ConfigDict,
  ): T {
    // tfjs-layers hands a layer its customObjects inside the config; a Dense needs none.
    const { layer, customObjects: _custom, ...rest } = config as { layer: { className: string; config: serialization.ConfigDict } } & Record<string, unknown>;
    if (layer?.className !== 'Dense') fail('ERR_IO', 'LoRADense.fromConfig', 'config.layer', "a Dense layer's config", said(String(layer?.className)));
    return new cls({ ...rest, layer: needLayers('LoRADense.fromConfig').layers.dense(layer.config as never) });
  }

  // The adapter as saveAdapter and loadAdapter see it (lib/io/adapter-layer.ts).

  adapterSettings(where: string, arg: string): AdapterSettings {
    this.checkAdapterTarget(where, arg);
    const A = this.#A!;
    return { inFeatures: A.shape[0]!, outFeatures: this.#units(), rank: this.rank, alpha: this.#alpha, rslora: this.#rslora, dropout: this.dropout };
  }

  adapterWeights(where: string, arg: string): { A: Float32Array; B: Float32Array } {
    this.checkAdapterTarget(where, arg);
    // The variables' own arrays on the cpu backend; a copy out of the heap on wasm (r·(I + O) floats).
    return { A: this.#A!.read().dataSync() as Float32Array, B: this.#B!.read().dataSync() as Float32Array };
  }

  checkAdapterTarget(where: string, arg: string): void {
    if (this.#A === null) fail('ERR_ARGUMENT', where, arg, 'a built LoRADense (call it on an input, or put it in a model, first)', said('one not built yet'));
    for (const [name, v] of [['loraA', this.#A], ['loraB', this.#B!]] as const) {
      if (v.read().isDisposed) fail('ERR_DISPOSED', where, `${arg}.${name}`, 'a live weight', said('a disposed one'));
    }
  }

  setAdapter(_where: string, v: AdapterValues): void {
    this.#alpha = v.alpha;
    this.#rslora = v.rslora;
    const A = this.#A!, B = this.#B!;
    tf.tidy(() => {
      A.write(tf.tensor(v.A, A.shape as number[]));
      B.write(tf.tensor(v.B, B.shape as number[]));
    });
  }

  #units(): number {
    return this.dense.getConfig().units as number;
  }

  /** The Dense's kernel, bias and activation, read from the built layer. */
  #parts(): DenseParts {
    const config = this.dense.getConfig();
    const weights = this.dense.weights;
    const named = (n: string) => weights.find((w) => w.originalName.endsWith(`/${n}`) || w.originalName === n) ?? null;
    const kernel = named('kernel');
    if (kernel === null) fail('ERR_ARGUMENT', 'LoRADense', 'layer', 'a Dense layer with a kernel', said(`weights ${weights.map((w) => w.originalName).join(', ') || 'none'}`));
    const useBias = config.useBias !== false;
    // tfjs keeps the activation as a private field of Dense; 'linear' is the identity.
    const act = (this.dense as unknown as { activation?: { apply(t: Tensor): Tensor } }).activation;
    const activation = config.activation === 'linear' || act === undefined ? null : { name: String(config.activation), apply: (t: Tensor) => act.apply(t) };
    return { units: config.units as number, useBias, kernel, bias: useBias ? named('bias') : null, activation };
  }
}

if (tfLayers !== null) tf.serialization.registerClass(LoRADense);
