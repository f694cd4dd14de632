// The client side: enqueueTraining checks a job and adds it to a BullMQ queue; waitForTraining
// follows it (progress events from the workers' job.updateProgress) until it completes or fails.
import type { Job, Queue, QueueEvents } from 'bullmq';
import { fail } from '../errors';
import { checkOptions, optionKeys } from '../validate';
import { absoluteJob, checkTrainingJob, TrainingJob, TrainingProgress, TrainingResult } from './job';

/** The job name training jobs are added under. */
export const TRAINING_JOB_NAME = 'train';

export interface EnqueueOptions {
  /** BullMQ's job id (a re-added id is ignored by BullMQ while the first exists). Default: BullMQ's own. */
  jobId?: string;
  /** Resolves relative paths of the job. Default: process.cwd(). */
  cwd?: string;
}
const ENQUEUE_KEYS = optionKeys<EnqueueOptions>({ jobId: true, cwd: true });

/**
 * Checks `job` (its fields only: the files are the worker's to read) and adds it to `queue` with its
 * paths made absolute. Failed and completed jobs are kept (BullMQ's default), so their results stay readable.
 */
export async function enqueueTraining(queue: Queue, job: TrainingJob, options?: EnqueueOptions): Promise<Job<TrainingJob, TrainingResult>> {
  const where = 'enqueueTraining';
  // The job and the options first: a refused job never needs a connection to be refused.
  const checked = checkTrainingJob(where, job);
  const o = checkOptions(where, options, ENQUEUE_KEYS);
  if (queue === null || typeof queue !== 'object' || typeof (queue as Queue).add !== 'function') fail('ERR_ARGUMENT', where, 'queue', 'a BullMQ Queue', queue);
  if (o.jobId !== undefined && (typeof o.jobId !== 'string' || o.jobId === '')) fail('ERR_ARGUMENT', where, 'options.jobId', 'a non-empty string', o.jobId);
  const data = absoluteJob(checked, o.cwd);
  return (await queue.add(TRAINING_JOB_NAME, data, o.jobId === undefined ? {} : { jobId: o.jobId })) as Job<TrainingJob, TrainingResult>;
}

/** Waits for the job to finish, calling onProgress with each progress update; rejects with the job's failure. */
export async function waitForTraining(job: Job<TrainingJob, TrainingResult>, events: QueueEvents, onProgress?: (p: TrainingProgress) => void): Promise<TrainingResult> {
  const listener = ({ jobId, data }: { jobId: string; data: unknown }) => {
    if (jobId === job.id && onProgress && isProgress(data)) onProgress(data);
  };
  events.on('progress', listener);
  try {
    return await job.waitUntilFinished(events);
  } finally {
    events.off('progress', listener);
  }
}

function isProgress(v: unknown): v is TrainingProgress {
  const p = v as TrainingProgress;
  return p !== null && typeof p === 'object' && typeof p.step === 'number' && typeof p.steps === 'number' && typeof p.loss === 'number';
}
