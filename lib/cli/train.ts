// `fused-lora train`: builds the model of a JSON description, wraps its target layers in LoRA,
// fits the adapters on the data with the described optimizer and loss, and writes a PEFT adapter.
import fs from 'node:fs';
import path from 'node:path';
import { SingleBar } from 'cli-progress';
import { saveAdapter } from '../io/adapter';
import { loadSafetensors, writeSafetensors } from '../io/safetensors';
import { Linear } from '../linear';
import { crossEntropyLoss, mseLoss } from '../losses';
import { AdamW, clipGradNorm, SGD } from '../optim';
import { Random } from '../random';
import { applyLoRA } from '../sequential';
import { Tensor } from '../tensor';
import { errorAt, fail, said } from '../errors';
import { loadDataset } from './data';
import { buildModel, parseModelSpec } from './model-spec';

export interface TrainOptions {
  model: string;
  data: string;
  out: string;
  steps?: number;
  batchSize?: number;
  lr?: number;
  seed?: number;
  progress?: boolean;
  log?: (line: string) => void;
}

export interface TrainResult {
  steps: number;
  firstLoss: number;
  lastLoss: number;
  layers: string[];
  /** The base weights file the adapter belongs to: the spec's `weights`, or the one written beside the adapter. */
  base: string;
}

/** The base file written beside the adapter when the spec has no `weights` (the layers drawn from `seed`). */
export const DRAWN_BASE = 'base.safetensors';

/**
 * --out must be a directory we can write (or one we can create), checked before the first step rather
 * than after the last; nothing is created until the adapter is written.
 */
function checkOutDir(dir: string): void {
  let at = path.resolve(dir);
  try {
    while (!fs.existsSync(at)) at = path.dirname(at);
    if (!fs.statSync(at).isDirectory()) throw new Error(`${at} is not a directory`);
    fs.accessSync(at, fs.constants.W_OK);
  } catch (e) {
    throw errorAt('ERR_IO', 'train', `--out ${dir} is not a directory that can be written`, e);
  }
}

/** The frozen Linear layers' weights by PyTorch's names ("fc1.weight", "fc1.bias"), as `weights` files hold them. */
function baseTensors(model: ReturnType<typeof buildModel>): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [name, layer] of model.namedModules()) {
    if (!(layer instanceof Linear)) continue;
    out[`${name}.weight`] = layer.weight;
    if (layer.bias) out[`${name}.bias`] = layer.bias;
  }
  return out;
}

export async function runTrain(o: TrainOptions): Promise<TrainResult> {
  const log = o.log ?? ((l: string) => console.log(l));
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(o.model, 'utf8'));
  } catch (e) {
    fail('ERR_IO', 'train', '--model', 'a readable JSON model file', said(`${o.model} (${(e as Error).message})`));
  }
  const spec = parseModelSpec(raw);
  const steps = o.steps ?? spec.steps, batch = o.batchSize ?? spec.batchSize, lr = o.lr ?? spec.optimizer.lr, seed = o.seed ?? spec.seed;
  const weightsFile = spec.weights ? path.resolve(path.dirname(o.model), spec.weights) : null;
  const weights = weightsFile ? await loadSafetensors(weightsFile) : null;
  const model = buildModel({ ...spec, seed }, weights);
  const drawn = weights ? null : baseTensors(model);
  const layers = applyLoRA(model, { rank: spec.lora.rank, alpha: spec.lora.alpha, targets: spec.lora.targets, dropout: spec.lora.dropout, rslora: spec.lora.rslora, seed });
  const params = model.parameters();
  const trainable = params.reduce((a, p) => a + p.size, 0);
  log(`model: ${spec.layers.map((l) => l.name).join(' -> ')}; LoRA rank ${spec.lora.rank} on ${Object.keys(layers).join(', ')}: ${trainable} trainable parameters`);

  const data = await loadDataset(o.data);
  const firstLinear = spec.layers.find((l) => l.type === 'linear')!;
  const lastLinear = [...spec.layers].reverse().find((l) => l.type === 'linear')!;
  if (data.I !== firstLinear.in) fail('ERR_SHAPE', 'train', 'data x', `${firstLinear.in} features (layer ${firstLinear.name})`, said(`${data.I}`));
  if (spec.loss === 'mse' && data.O !== lastLinear.out) fail('ERR_SHAPE', 'train', 'data y (mse)', `${lastLinear.out} features`, said(`${data.O ?? 'labels'}`));
  if (spec.loss === 'cross_entropy' && !data.labels) fail('ERR_SHAPE', 'train', 'the data (cross_entropy)', 'class labels', said('targets y'));
  if (data.labels) {
    const classes = lastLinear.out;
    data.labels.forEach((k, i) => {
      if (k >= classes) throw errorAt('ERR_ARGUMENT', 'data', `${o.data}: ${data.where(i)}: expected a label in 0..${classes - 1} (layer ${lastLinear.name} has ${classes} outputs) but received ${k}`);
    });
  }
  const B = Math.min(batch, data.N);
  if (B < batch) log(`note: batch size ${batch} is more than the ${data.N} rows of ${o.data}; each step takes all ${data.N}`);
  checkOutDir(o.out);

  const { type, lr: _lr, ...hyper } = spec.optimizer;
  const opt = type === 'sgd' ? new SGD(params, { ...hyper, lr }) : new AdamW(params, { ...hyper, lr });
  const rng = new Random(seed);
  const order = Uint32Array.from({ length: data.N }, (_, i) => i);
  const xb = new Float32Array(B * data.I);
  const yb = data.y ? new Float32Array(B * data.O!) : null;
  const lb = data.labels ? new Int32Array(B) : null;
  const bar = o.progress === false ? null : new SingleBar({ format: 'training [{bar}] {value}/{total} steps | loss {loss} | {rate} steps/s', hideCursor: true });
  bar?.start(steps, 0, { loss: '-', rate: '-' });
  const started = performance.now();
  let firstLoss = NaN, lastLoss = NaN, cursor = data.N;
  for (let step = 1; step <= steps; step++) {
    for (let i = 0; i < B; i++) {  // the next B rows of a shuffled pass over the data
      if (cursor >= data.N) {
        for (let k = data.N - 1; k > 0; k--) {
          const j = rng.nextUint32() % (k + 1);
          [order[k], order[j]] = [order[j], order[k]];
        }
        cursor = 0;
      }
      const row = order[cursor++];
      xb.set(data.x.subarray(row * data.I, (row + 1) * data.I), i * data.I);
      if (yb) yb.set(data.y!.subarray(row * data.O!, (row + 1) * data.O!), i * data.O!);
      if (lb) lb[i] = data.labels![row];
    }
    const out = model.forward(new Tensor(xb, [B, data.I]));
    const { loss, grad } = yb ? mseLoss(out, new Tensor(yb, [B, data.O!])) : crossEntropyLoss(out, lb!);
    model.backward(grad, { inputGrad: false });
    if (spec.clipGradNorm !== undefined) clipGradNorm(params, spec.clipGradNorm);
    opt.step();
    opt.zeroGrad();
    if (!Number.isFinite(loss)) {
      bar?.stop();
      throw errorAt('ERR_NOT_FINITE', 'train', `the loss is ${loss} at step ${step} of ${steps} (learning rate ${lr}${step > 1 ? `, last finite loss ${lastLoss.toExponential(3)}` : ''}); no adapter was written: lower the learning rate, or set clipGradNorm`);
    }
    if (step === 1) firstLoss = loss;
    lastLoss = loss;
    if (step % 10 === 0 || step === steps) bar?.update(step, { loss: loss.toExponential(3), rate: (step / ((performance.now() - started) / 1000)).toFixed(1) });
  }
  bar?.stop();
  // Without a weights file the base was drawn from the seed: it is written beside the adapter, so the
  // adapter is never tied to a base that exists nowhere ("weights": "<out>/base.safetensors" reuses it).
  const base = weightsFile ?? path.join(o.out, DRAWN_BASE);
  if (drawn) {
    fs.mkdirSync(o.out, { recursive: true });
    await writeSafetensors(base, drawn, { metadata: { drawn_from_seed: String(seed) } });
  }
  await saveAdapter(o.out, layers, { baseModel: spec.baseModel ?? path.basename(o.model) });
  log(`trained ${steps} steps: loss ${firstLoss.toExponential(3)} -> ${lastLoss.toExponential(3)}; adapter written to ${o.out}` +
    (drawn ? `, with the base it drew from seed ${seed} as ${base}` : ''));
  return { steps, firstLoss, lastLoss, layers: Object.keys(layers), base };
}
