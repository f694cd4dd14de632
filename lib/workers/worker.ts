// createTrainingWorker: a BullMQ Worker on a queue of training jobs. It holds up to `concurrency`
// jobs at once; those on one base train together as one mixed-adapter batch (lib/workers/group.ts).
// Faults, and what each does:
// - a job that fails its checks (fields, model file, data) or its training fails alone, as an
//   UnrecoverableError with the LoraError's code and message (no retry: it would fail again);
// - a worker killed mid-job stops renewing the job's lock; BullMQ's stalled-job check (run by every
//   worker, each stalledInterval) puts the job back in wait, and the next worker to take it resumes
//   from its last checkpoint;
// - close() (the CLI calls it on SIGTERM and SIGINT) stops taking jobs, lets the step under way
//   finish, checkpoints each job, moves it back to wait and returns once all are handed back;
// - a lost Redis connection is ioredis's to restore (it retries for ever with a worker's
//   connection); training goes on meanwhile, progress updates wait, and the job's lock is renewed
//   once the connection is back.
import type { Job } from 'bullmq';
import { fail, LoraError } from '../errors';
import { checkDim, checkOptions, optionKeys } from '../validate';
import { HandBack } from './group';
import { checkTrainingJob, prepareJob, TrainingJob, TrainingProgress, TrainingResult } from './job';
import { TrainingScheduler } from './scheduler';

/** Redis connection options as BullMQ takes them ({ host, port }, { url }, or an ioredis instance). */
export type ConnectionOptions = import('bullmq').ConnectionOptions;

export interface TrainingWorkerOptions {
  connection: ConnectionOptions;
  /** The queue's name. */
  queue: string;
  /** Most jobs held at once. Default: batchAdapters. */
  concurrency?: number;
  /** Most adapters trained in one batch (jobs on one base). Default 8; 1 trains each job in its own batch. */
  batchAdapters?: number;
  /**
   * Most rows in one batch step, all its jobs' batch sizes together: the memory budget of a batch
   * (activations grow with it). A job that would pass it starts a batch of its own. Default: no limit.
   */
  maxBatchRows?: number;
  /** Steps between a job's checkpoints. Default 100. */
  checkpointEvery?: number;
  /** How long a job's lock lasts unless renewed, ms (BullMQ's lockDuration). Default 30000. */
  lockDuration?: number;
  /** How often this worker looks for stalled jobs, ms (BullMQ's stalledInterval). Default 30000. */
  stalledInterval?: number;
  /** Where the worker's lines go (a job resumed, handed back, failed). Default: none. */
  log?: (line: string) => void;
  /** BullMQ's key prefix. Default 'bull'. */
  prefix?: string;
}
export const TRAINING_WORKER_KEYS = optionKeys<TrainingWorkerOptions>({
  connection: true, queue: true, concurrency: true, batchAdapters: true, maxBatchRows: true, checkpointEvery: true, lockDuration: true, stalledInterval: true, log: true, prefix: true,
});

export interface TrainingWorker {
  /** The BullMQ Worker (events: 'completed', 'failed', 'error', …). */
  readonly worker: import('bullmq').Worker<TrainingJob, TrainingResult>;
  /** Stops taking jobs, checkpoints the jobs under way and hands them back to the queue, then closes. */
  close(): Promise<void>;
}

/** Progress updates a job sends at most this often (the last step always goes). */
const PROGRESS_MS = 200;

export function createTrainingWorker(options: TrainingWorkerOptions): TrainingWorker {
  const where = 'createTrainingWorker';
  const o = checkOptions(where, options, TRAINING_WORKER_KEYS);
  if (o.connection === null || typeof o.connection !== 'object') fail('ERR_ARGUMENT', where, 'options.connection', 'Redis connection options ({ host, port }, { url } or an ioredis client)', o.connection);
  if (typeof o.queue !== 'string' || o.queue === '') fail('ERR_ARGUMENT', where, 'options.queue', 'a queue name (a non-empty string)', o.queue);
  const batchAdapters = o.batchAdapters === undefined ? 8 : checkDim(where, 'options.batchAdapters', o.batchAdapters);
  const maxBatchRows = o.maxBatchRows === undefined ? Infinity : checkDim(where, 'options.maxBatchRows', o.maxBatchRows);
  const concurrency = o.concurrency === undefined ? batchAdapters : checkDim(where, 'options.concurrency', o.concurrency);
  const checkpointEvery = o.checkpointEvery === undefined ? 100 : checkDim(where, 'options.checkpointEvery', o.checkpointEvery);
  const lockDuration = o.lockDuration === undefined ? undefined : checkDim(where, 'options.lockDuration', o.lockDuration);
  const stalledInterval = o.stalledInterval === undefined ? undefined : checkDim(where, 'options.stalledInterval', o.stalledInterval);
  if (o.log !== undefined && typeof o.log !== 'function') fail('ERR_ARGUMENT', where, 'options.log', 'a function', o.log);
  const log = o.log ?? (() => {});

  const { Worker, UnrecoverableError, WaitingError } = require('bullmq') as typeof import('bullmq');
  const scheduler = new TrainingScheduler({ batchAdapters, maxBatchRows, checkpointEvery });

  const processor = async (job: Job<TrainingJob, TrainingResult>, token?: string): Promise<TrainingResult> => {
    const name = `job-${job.id}`;
    let prep;
    try {
      prep = await prepareJob('worker', checkTrainingJob('worker', job.data));
    } catch (e) {
      throw unrecoverable(e);
    }
    let last = 0, sending = false;
    const progress = (step: number, loss: number) => {
      const now = Date.now();
      if (step !== prep.plan.steps && (sending || now - last < PROGRESS_MS)) return;
      last = now;
      sending = true;
      const p: TrainingProgress = { step, steps: prep.plan.steps, loss };
      // Not awaited: training does not wait for Redis (the update waits for the connection instead).
      job.updateProgress(p).catch(() => {}).finally(() => {
        sending = false;
      });
    };
    try {
      const result = await scheduler.train(prep, name, { progress, log });
      log(`${name}: done, ${result.steps} steps (resumed from ${result.resumedFrom}, batched with ${result.batchedWith}), loss ${result.lastLoss.toExponential(3)}`);
      return result;
    } catch (e) {
      if (e instanceof HandBack) {
        await job.moveToWait(token);
        log(`${name}: handed back at step ${e.step}`);
        throw new WaitingError();
      }
      log(`${name}: failed: ${(e as Error).message}`);
      throw unrecoverable(e);
    }

    function unrecoverable(e: unknown): Error {
      return e instanceof LoraError ? new UnrecoverableError(`${e.code}: ${e.message}`) : (e as Error);
    }
  };

  const worker = new Worker<TrainingJob, TrainingResult>(o.queue, processor, {
    connection: o.connection, concurrency, prefix: o.prefix, ...(lockDuration && { lockDuration }), ...(stalledInterval && { stalledInterval }),
  });
  worker.on('error', (e) => log(`worker: ${e.message}`));

  let closing: Promise<void> | null = null;
  return {
    worker,
    close: () => (closing ??= (async () => {
      const closed = worker.close();  // takes no new jobs; resolves once every processor has returned
      await scheduler.stop();
      await closed;
    })()),
  };
}
