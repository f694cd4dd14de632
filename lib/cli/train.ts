// `fused-lora train`: builds the model of a JSON description, wraps its target layers in LoRA,
// fits the adapters on the data with the described optimizer and loss, and writes a PEFT adapter.
import { SingleBar } from 'cli-progress';
import { saveAdapter } from '../io/adapter';
import { loadSafetensors } from '../io/safetensors';
import { clipGradNorm } from '../optim';
import { applyLoRA } from '../sequential';
import { Tensor } from '../tensor';
import { loadDataset } from './data';
import { buildModel } from './model-spec';
import { BatchSampler, checkDataset, makeOptimizer, planTraining, StepRows, TrainSettings } from './train-plan';

export interface TrainOptions extends TrainSettings {
  out: string;
  progress?: boolean;
  log?: (line: string) => void;
}

export interface TrainResult {
  steps: number;
  firstLoss: number;
  lastLoss: number;
  layers: string[];
}

export async function runTrain(o: TrainOptions): Promise<TrainResult> {
  const log = o.log ?? ((l: string) => console.log(l));
  const plan = planTraining('train', o);
  const { spec, steps, lr, seed } = plan;
  const weights = plan.weightsFile ? await loadSafetensors(plan.weightsFile) : null;
  const model = buildModel(spec, weights);
  const layers = applyLoRA(model, { rank: spec.lora.rank, alpha: spec.lora.alpha, targets: spec.lora.targets, dropout: spec.lora.dropout, rslora: spec.lora.rslora, seed });
  const params = model.parameters();
  const trainable = params.reduce((a, p) => a + p.size, 0);
  log(`model: ${spec.layers.map((l) => l.name).join(' -> ')}; LoRA rank ${spec.lora.rank} on ${Object.keys(layers).join(', ')}: ${trainable} trainable parameters`);

  const data = await loadDataset(o.data);
  checkDataset('train', spec, data);
  const sampler = new BatchSampler(data, plan.batchSize, seed);
  const B = sampler.B;
  const rows = new StepRows(data, B);
  const opt = makeOptimizer(spec, lr, params);
  const bar = o.progress === false ? null : new SingleBar({ format: 'training [{bar}] {value}/{total} steps | loss {loss} | {rate} steps/s', hideCursor: true });
  bar?.start(steps, 0, { loss: '-', rate: '-' });
  const started = performance.now();
  let firstLoss = NaN, lastLoss = NaN;
  for (let step = 1; step <= steps; step++) {
    sampler.next(rows.x, rows.y, rows.labels);
    const out = model.forward(new Tensor(rows.x, [B, data.I]));
    const { loss, grad } = rows.loss(out);
    model.backward(grad, { inputGrad: false });
    if (spec.clipGradNorm !== undefined) clipGradNorm(params, spec.clipGradNorm);
    opt.step();
    opt.zeroGrad();
    if (step === 1) firstLoss = loss;
    lastLoss = loss;
    if (step % 10 === 0 || step === steps) bar?.update(step, { loss: loss.toExponential(3), rate: (step / ((performance.now() - started) / 1000)).toFixed(1) });
  }
  bar?.stop();
  await saveAdapter(o.out, layers, { baseModel: plan.baseModel });
  log(`trained ${steps} steps: loss ${firstLoss.toExponential(3)} -> ${lastLoss.toExponential(3)}; adapter written to ${o.out}`);
  return { steps, firstLoss, lastLoss, layers: Object.keys(layers) };
}
