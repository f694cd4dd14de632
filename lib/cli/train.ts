// `fused-lora train`: builds the model of a JSON description, wraps its target layers in LoRA,
// fits the adapters on the data with the described optimizer and loss, and writes a PEFT adapter.
// --dtype bfloat16 builds the frozen layers and runs the activations in bf16; --quantize holds the
// LoRA targets' frozen W in int8 or nf4 (applyLoRA's quantize). The adapters, their gradients and the
// optimizer stay float32 either way.
import { SingleBar } from 'cli-progress';
import { saveAdapter } from '../io/adapter';
import fs from 'node:fs';
import path from 'node:path';
import { errorAt, fail } from '../errors';
import { loadSafetensors } from '../io/safetensors';
import { Linear, Quantize } from '../linear';
import { LinearLoRA } from '../linear-lora';
import { clipGradNorm } from '../optim';
import { applyLoRA } from '../sequential';
import { Tensor, tensor } from '../tensor';
import { loadDataset } from './data';
import { buildModel, DRAWN_BASE, drawnBase, writeDrawnBase } from './model-spec';
import { BatchSampler, checkDataset, makeOptimizer, planTraining, StepRows, TrainSettings } from './train-plan';

/** The base file written beside the adapter when the spec has no `weights` (model-spec.ts writes it). */
export { DRAWN_BASE };

export interface TrainOptions extends TrainSettings {
  out: string;
  /** The frozen layers' and activations' dtype (default float32). */
  dtype?: 'float32' | 'bfloat16';
  /** The LoRA targets' frozen W quantized (nf4: each target's inputs a multiple of 64). */
  quantize?: Quantize;
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

/** What the frozen layers hold: each Linear's dtype or format, and their resident bytes against float32's. */
function frozenSummary(model: ReturnType<typeof buildModel>, dtype: string, quantize: Quantize | undefined): string {
  let held = 0, float32 = 0;
  for (const [, layer] of model.namedModules()) {
    const linear = layer instanceof LinearLoRA ? layer.base : layer;
    if (!(linear instanceof Linear)) continue;
    held += linear.frozenBytes().total;
    float32 += 4 * (linear.weight.size + (linear.bias?.size ?? 0));
  }
  return `${quantize ? `LoRA targets' W in ${quantize}, ` : ''}activations ${dtype}: the frozen layers hold ${held} bytes (${(held / float32).toFixed(3)}x of float32's ${float32})`;
}

export async function runTrain(o: TrainOptions): Promise<TrainResult> {
  const log = o.log ?? ((l: string) => console.log(l));
  const plan = planTraining('train', o);
  const { spec, steps, lr, seed } = plan;
  const dtype = o.dtype ?? 'float32';
  if (dtype !== 'float32' && dtype !== 'bfloat16') fail('ERR_ARGUMENT', 'train', '--dtype', 'float32 or bfloat16', dtype);
  if (o.quantize !== undefined && o.quantize !== 'int8' && o.quantize !== 'nf4') fail('ERR_ARGUMENT', 'train', '--quantize', 'int8 or nf4', o.quantize);
  const weights = plan.weightsFile ? await loadSafetensors(plan.weightsFile) : null;
  const model = buildModel(spec, weights, dtype);
  // The base as drawn, before any quantization: quantizing it again gives the same codes.
  const drawn = weights ? null : drawnBase(model);
  const layers = applyLoRA(model, {
    rank: spec.lora.rank, alpha: spec.lora.alpha, targets: spec.lora.targets, dropout: spec.lora.dropout, rslora: spec.lora.rslora, seed,
    ...(o.quantize ? { quantize: o.quantize } : {}),
  });
  const params = model.parameters();
  const trainable = params.reduce((a, p) => a + p.size, 0);
  log(`model: ${spec.layers.map((l) => l.name).join(' -> ')}; LoRA rank ${spec.lora.rank} on ${Object.keys(layers).join(', ')}: ${trainable} trainable parameters`);
  log(`base: ${frozenSummary(model, dtype, o.quantize)}`);

  const data = await loadDataset(o.data);
  checkDataset('train', spec, data, o.data);
  const sampler = new BatchSampler(data, plan.batchSize, seed);
  const B = sampler.B;
  if (B < plan.batchSize) log(`note: batch size ${plan.batchSize} is more than the ${data.N} rows of ${o.data}; each step takes all ${data.N}`);
  checkOutDir(o.out);
  const rows = new StepRows(data, B);
  const opt = makeOptimizer(spec, lr, params);
  const bar = o.progress === false ? null : new SingleBar({ format: 'training [{bar}] {value}/{total} steps | loss {loss} | {rate} steps/s', hideCursor: true });
  bar?.start(steps, 0, { loss: '-', rate: '-' });
  const started = performance.now();
  let firstLoss = NaN, lastLoss = NaN;
  for (let step = 1; step <= steps; step++) {
    sampler.next(rows.x, rows.y, rows.labels);
    const out = model.forward(dtype === 'float32' ? new Tensor(rows.x, [B, data.I]) : tensor(rows.x, [B, data.I], { dtype }));
    const { loss, grad } = rows.loss(out);
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
  // Without a weights file the base was drawn from the model file's seed: it is written beside the
  // adapter, so the adapter is never tied to a base that exists nowhere ("weights":
  // "<out>/base.safetensors" reuses it).
  const base = plan.weightsFile ?? path.join(o.out, DRAWN_BASE);
  if (drawn) await writeDrawnBase(o.out, drawn, dtype, spec.seed);
  await saveAdapter(o.out, layers, { baseModel: plan.baseModel });
  log(`trained ${steps} steps: loss ${firstLoss.toExponential(3)} -> ${lastLoss.toExponential(3)}; adapter written to ${o.out}` +
    (drawn ? `, with the base it drew from seed ${spec.seed} as ${base}` : ''));
  return { steps, firstLoss, lastLoss, layers: Object.keys(layers), base };
}
