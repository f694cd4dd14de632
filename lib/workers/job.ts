// A training job: what `fused-lora train` takes (the model file, the data file, the overrides of the
// model file's steps, batch size, learning rate and seed, the base's dtype and quantization) and the
// directory the adapter goes to.
// Paths are the worker's: every worker must see the same files at the same paths (a shared file
// system), and enqueueTraining makes them absolute. A job is checked twice: its shape when it is
// queued and again when a worker takes it (a job may come from any client), then in full (model
// file, data, shapes) before any training.
import fs from 'node:fs';
import path from 'node:path';
import { fail, said } from '../errors';
import { loadDataset, Dataset } from '../cli/data';
import { checkDataset, planTraining, TrainPlan } from '../cli/train-plan';
import { checkOptions, optionKeys } from '../validate';

export interface TrainingJob {
  /** The JSON model description (`fused-lora train --model`). */
  model: string;
  /** The training data, .jsonl or .safetensors (`--data`). */
  data: string;
  /** The adapter directory to write (`--out`); checkpoints go to its checkpoint/ subdirectory. */
  out: string;
  steps?: number;
  batchSize?: number;
  lr?: number;
  seed?: number;
  /** The frozen layers' and activations' dtype (`--dtype`; default float32). */
  dtype?: 'float32' | 'bfloat16';
  /** The LoRA targets' frozen W quantized (`--quantize`; nf4: each target's inputs a multiple of 64). */
  quantize?: 'int8' | 'nf4';
}
export const TRAINING_JOB_KEYS = optionKeys<TrainingJob>({
  model: true, data: true, out: true, steps: true, batchSize: true, lr: true, seed: true, dtype: true, quantize: true,
});

/** A job's fields, checked: unknown keys, types, ranges (ERR_ARGUMENT naming `arg`.field). */
export function checkTrainingJob(where: string, raw: unknown, arg = 'job'): TrainingJob {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) fail('ERR_ARGUMENT', where, arg, 'a training job object { model, data, out, … }', raw);
  const j = checkOptions(where, raw, TRAINING_JOB_KEYS, arg);
  for (const key of ['model', 'data', 'out'] as const) {
    if (typeof j[key] !== 'string' || j[key] === '') fail('ERR_ARGUMENT', where, `${arg}.${key}`, 'a non-empty path', j[key]);
  }
  for (const key of ['steps', 'batchSize', 'seed'] as const) {
    const v = j[key];
    if (v !== undefined && !(Number.isSafeInteger(v) && v > 0)) fail('ERR_ARGUMENT', where, `${arg}.${key}`, 'a positive integer', v);
  }
  if (j.lr !== undefined && !(typeof j.lr === 'number' && Number.isFinite(j.lr) && j.lr > 0)) fail('ERR_ARGUMENT', where, `${arg}.lr`, 'a finite number > 0', j.lr);
  if (j.dtype !== undefined && j.dtype !== 'float32' && j.dtype !== 'bfloat16') fail('ERR_ARGUMENT', where, `${arg}.dtype`, "'float32' or 'bfloat16'", j.dtype);
  if (j.quantize !== undefined && j.quantize !== 'int8' && j.quantize !== 'nf4') fail('ERR_ARGUMENT', where, `${arg}.quantize`, "'int8' or 'nf4'", j.quantize);
  return j as TrainingJob;
}

/** A job checked in full and ready to train: its plan, its data, and the key of the base it trains on. */
export interface PreparedJob {
  job: TrainingJob;
  plan: TrainPlan;
  data: Dataset;
  /**
   * Jobs with equal keys train in one batch: the same layers and LoRA targets over the same base
   * weights (the same file, unchanged; or, with no file, the same seeded initialisation), held the
   * same way (dtype, quantization).
   */
  baseKey: string;
}

export async function prepareJob(where: string, job: TrainingJob): Promise<PreparedJob> {
  const plan = planTraining(where, job);
  const data = await loadDataset(job.data);
  checkDataset(where, plan.spec, data, job.data);
  let weights: unknown = { seed: plan.spec.seed };
  if (plan.weightsFile !== null) {
    let st: fs.Stats;
    try {
      st = fs.statSync(plan.weightsFile);
    } catch (e) {
      fail('ERR_IO', where, 'weights', 'a readable base weights file', said(`${plan.weightsFile} (${(e as Error).message})`));
    }
    weights = { file: plan.weightsFile, size: st.size, mtimeMs: st.mtimeMs };
  }
  const format = { dtype: job.dtype ?? 'float32', quantize: job.quantize ?? null };
  const baseKey = JSON.stringify({ layers: plan.spec.layers, targets: plan.spec.lora.targets ?? null, weights, ...format });
  return { job, plan, data, baseKey };
}

/** What a job's progress reports: the steps done of its steps, and the last step's loss. */
export interface TrainingProgress {
  step: number;
  steps: number;
  loss: number;
}

/** What a finished job returns. */
export interface TrainingResult {
  /** The adapter directory written (the job's out). */
  adapter: string;
  /**
   * The base weights file the adapter belongs to: the model file's `weights`, or, where the layers were
   * drawn from its seed, `<out>/base.safetensors`, written beside the adapter as `train` writes it.
   */
  base: string;
  steps: number;
  firstLoss: number;
  lastLoss: number;
  /** The step its last checkpoint had reached when this worker took it (0: from the start). */
  resumedFrom: number;
  /** The most adapters trained in one batch alongside this one (itself included). */
  batchedWith: number;
}

/** The job with its paths made absolute against `cwd`. */
export function absoluteJob(job: TrainingJob, cwd = process.cwd()): TrainingJob {
  return { ...job, model: path.resolve(cwd, job.model), data: path.resolve(cwd, job.data), out: path.resolve(cwd, job.out) };
}
