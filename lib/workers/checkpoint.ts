// A job's checkpoint: <out>/checkpoint/ holds its adapter with the optimizer's state (saveAdapter's
// atomic writes) and checkpoint.json (the job's fingerprint, the step, the losses), written last,
// also atomically. A checkpoint resumes a job only if all of it agrees: the fingerprint is this
// job's, and the optimizer's step count equals the step checkpoint.json names. A worker killed
// between two of the files leaves a set that does not agree, and the job starts over (correct,
// only slower); no file is ever half-written.
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { loadAdapter, saveAdapter, StatefulOptimizer } from '../io/adapter';
import { writeFileAtomic } from '../io/atomic';
import type { MultiLoRALinear } from '../multi-lora-linear';
import type { TrainingJob } from './job';

export const CHECKPOINT_DIR = 'checkpoint';
const STATE_FILE = 'checkpoint.json';

export interface CheckpointState {
  fingerprint: string;
  step: number;
  firstLoss: number;
  lastLoss: number;
}

/** The job's identity for its checkpoints: its fields, in a fixed order, hashed. */
export function fingerprint(job: TrainingJob): string {
  const fields = Object.keys(job).sort().map((k) => [k, (job as unknown as Record<string, unknown>)[k]]);
  return createHash('sha256').update(JSON.stringify(fields)).digest('hex');
}

export function checkpointDir(job: TrainingJob): string {
  return path.join(job.out, CHECKPOINT_DIR);
}

export async function saveCheckpoint(job: TrainingJob, layers: Record<string, MultiLoRALinear>, adapter: string, optimizer: StatefulOptimizer,
  state: CheckpointState, baseModel: string): Promise<void> {
  const dir = checkpointDir(job);
  await saveAdapter(dir, layers, { adapter, optimizer, baseModel });
  const json = Buffer.from(JSON.stringify(state) + '\n');
  await writeFileAtomic('checkpoint', path.join(dir, STATE_FILE), (put) => put(json));
}

/**
 * Loads the job's checkpoint into its adapter and optimizer. 'none': there is no checkpoint of this
 * job (nothing changed); 'mismatch': the files did not agree after loading (the adapter and the
 * optimizer hold something and must be made afresh); else the state resumed.
 */
export async function loadCheckpoint(job: TrainingJob, layers: Record<string, MultiLoRALinear>, adapter: string,
  optimizer: StatefulOptimizer & { stepCount: number }): Promise<CheckpointState | 'none' | 'mismatch'> {
  const dir = checkpointDir(job);
  let state: CheckpointState;
  try {
    state = JSON.parse(await fs.readFile(path.join(dir, STATE_FILE), 'utf8')) as CheckpointState;
  } catch {
    return 'none';
  }
  if (state?.fingerprint !== fingerprint(job) || !Number.isSafeInteger(state.step) || state.step < 1) return 'none';
  let restored: boolean;
  try {
    restored = (await loadAdapter(dir, layers, { adapter, optimizer })).optimizer;
  } catch {
    return 'none';  // a failed load changes nothing
  }
  // Without its optimizer file the adapter's A and B were loaded all the same.
  return restored && optimizer.stepCount === state.step ? state : 'mismatch';
}

export async function removeCheckpoint(job: TrainingJob): Promise<void> {
  await fs.rm(checkpointDir(job), { recursive: true, force: true });
}
