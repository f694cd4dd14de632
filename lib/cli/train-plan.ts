// What `fused-lora train` and the training workers (lib/workers) share, so a job trained in a worker's
// mixed-adapter batch sees exactly what the same job trained alone sees: the resolved settings (the
// model file's, overridden by the command's), the checks of the data against the model, the order
// in which rows are drawn, the optimizer, and one job's loss on its rows of a batch.
import fs from 'node:fs';
import path from 'node:path';
import { errorAt, fail, said } from '../errors';
import { crossEntropyLoss, mseLoss } from '../losses';
import { AdamW, SGD } from '../optim';
import { Random } from '../random';
import { Tensor, tensor } from '../tensor';
import type { Dataset } from './data';
import { ModelSpec, parseModelSpec } from './model-spec';

/** What `train` takes beside the output directory: files, and overrides of the model file's values. */
export interface TrainSettings {
  model: string;
  data: string;
  steps?: number;
  batchSize?: number;
  lr?: number;
  seed?: number;
}

/** The settings resolved against the model file. */
export interface TrainPlan {
  spec: ModelSpec;
  steps: number;
  batchSize: number;
  lr: number;
  /** Seeds the adapters' initialisation and dropout, and the order of rows. */
  seed: number;
  /** The base weights' file, resolved against the model file's directory; null for a seeded base. */
  weightsFile: string | null;
  /** What the adapter's config names as its base. */
  baseModel: string;
}

/** Reads and checks the model file (ERR_IO naming it, ERR_ARGUMENT naming the JSON path) and resolves the overrides. */
export function planTraining(where: string, o: TrainSettings): TrainPlan {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(o.model, 'utf8'));
  } catch (e) {
    fail('ERR_IO', where, '--model', 'a readable JSON model file', said(`${o.model} (${(e as Error).message})`));
  }
  const spec = parseModelSpec(raw);
  return {
    spec,
    steps: o.steps ?? spec.steps,
    batchSize: o.batchSize ?? spec.batchSize,
    lr: o.lr ?? spec.optimizer.lr,
    seed: o.seed ?? spec.seed,
    weightsFile: spec.weights ? path.resolve(path.dirname(o.model), spec.weights) : null,
    baseModel: spec.baseModel ?? path.basename(o.model),
  };
}

/**
 * The data fits the model: x's width is the first Linear's input, the targets suit the loss, and every
 * label is a class of the last Linear (named by its line of `file`), all before the first step.
 */
export function checkDataset(where: string, spec: ModelSpec, data: Dataset, file: string): void {
  const firstLinear = spec.layers.find((l) => l.type === 'linear')!;
  const lastLinear = [...spec.layers].reverse().find((l) => l.type === 'linear')!;
  if (firstLinear.type !== 'linear' || lastLinear.type !== 'linear') return;
  if (data.I !== firstLinear.in) fail('ERR_SHAPE', where, 'data x', `${firstLinear.in} features (layer ${firstLinear.name})`, said(`${data.I}`));
  if (spec.loss === 'mse' && data.O !== lastLinear.out) fail('ERR_SHAPE', where, 'data y (mse)', `${lastLinear.out} features`, said(`${data.O ?? 'labels'}`));
  if (spec.loss === 'cross_entropy' && !data.labels) fail('ERR_SHAPE', where, 'the data (cross_entropy)', 'class labels', said('targets y'));
  if (data.labels) {
    const classes = lastLinear.out;
    data.labels.forEach((k, i) => {
      if (k >= classes) throw errorAt('ERR_ARGUMENT', 'data', `${file}: ${data.where(i)}: expected a label in 0..${classes - 1} (layer ${lastLinear.name} has ${classes} outputs) but received ${k}`);
    });
  }
}

/** The optimizer of the spec over `params`, at learning rate `lr`. */
export function makeOptimizer(spec: ModelSpec, lr: number, params: Tensor[]): SGD | AdamW {
  const { type, lr: _lr, ...hyper } = spec.optimizer;
  return type === 'sgd' ? new SGD(params, { ...hyper, lr }) : new AdamW(params, { ...hyper, lr });
}

/**
 * The rows of each step: B at a time from shuffled passes over the data, a new shuffle (Fisher-Yates
 * from the seed's generator) whenever a pass runs out. The order depends on (N, B, seed) alone, so
 * skip(steps) puts a resumed job exactly where it stopped.
 */
export class BatchSampler {
  readonly B: number;
  readonly #data: Dataset;
  readonly #rng: Random;
  readonly #order: Uint32Array;
  #cursor: number;

  constructor(data: Dataset, batchSize: number, seed: number) {
    this.#data = data;
    this.B = Math.min(batchSize, data.N);
    this.#rng = new Random(seed);
    this.#order = Uint32Array.from({ length: data.N }, (_, i) => i);
    this.#cursor = data.N;
  }

  #nextRow(): number {
    const N = this.#data.N, order = this.#order;
    if (this.#cursor >= N) {
      for (let k = N - 1; k > 0; k--) {
        const j = this.#rng.nextUint32() % (k + 1);
        [order[k], order[j]] = [order[j], order[k]];
      }
      this.#cursor = 0;
    }
    return order[this.#cursor++];
  }

  /** The next step's B rows into x (B, I) and y (B, O) or labels (B). */
  next(x: Float32Array, y: Float32Array | null, labels: Int32Array | null): void {
    const { I, O } = this.#data;
    for (let i = 0; i < this.B; i++) {
      const row = this.#nextRow();
      x.set(this.#data.x.subarray(row * I, (row + 1) * I), i * I);
      if (y) y.set(this.#data.y!.subarray(row * O!, (row + 1) * O!), i * O!);
      if (labels) labels[i] = this.#data.labels![row];
    }
  }

  /** Draws and drops `steps` steps' rows. */
  skip(steps: number): void {
    for (let s = 0; s < steps * this.B; s++) this.#nextRow();
  }
}

/** One step's rows of a job: inputs and targets, reused from step to step. */
export class StepRows {
  readonly x: Float32Array;
  readonly y: Float32Array | null;
  readonly labels: Int32Array | null;

  constructor(data: Dataset, B: number) {
    this.x = new Float32Array(B * data.I);
    this.y = data.y ? new Float32Array(B * data.O!) : null;
    this.labels = data.labels ? new Int32Array(B) : null;
  }

  /**
   * The loss of the prediction (B, O) against these rows' targets; its gradient into `grad` when given.
   * A bfloat16 prediction is compared with the targets rounded to bfloat16.
   */
  loss(pred: Tensor, grad?: Tensor): { loss: number; grad: Tensor } {
    const out = grad === undefined ? undefined : { out: grad };
    if (!this.y) return crossEntropyLoss(pred, this.labels!, out);
    return mseLoss(pred, pred.dtype === 'float32' ? new Tensor(this.y, pred.shape) : tensor(this.y, pred.shape, { dtype: pred.dtype }), out);
  }
}
