// `fused-lora worker` and `fused-lora submit`: the training workers of fused-lora/workers from the
// command line. BullMQ is loaded only when one of them runs.
import path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { DEMO_DTYPES, DEMO_QUANTIZE } from '../demo';
import { DRAWN_BASE } from './model-spec';
import type { TrainingProgress } from '../workers';

function int(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

function positive(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number');
  return n;
}

function redisUrl(value: string): string {
  if (!/^rediss?:\/\//.test(value)) throw new InvalidArgumentError('expected a URL redis://host:port[/db] (or rediss:// for TLS)');
  return value;
}

/** A worker's connection: ioredis retries for ever and queues commands while Redis is away, as BullMQ wants. */
const connectionOf = (url: string) => ({ url, maxRetriesPerRequest: null });

export function registerWorkerCommands(cmd: Command): void {
  cmd.command('worker')
    .description('take training jobs from a Redis queue and train them, jobs on one base together as one mixed-adapter batch')
    .requiredOption('--redis <url>', 'Redis server, redis://host:port', redisUrl)
    .requiredOption('--queue <name>', 'queue name')
    .option('--concurrency <n>', 'most jobs held at once (default: --batch-adapters)', int)
    .option('--batch-adapters <k>', 'most adapters trained in one batch', int, 8)
    .option('--max-batch-rows <n>', 'most rows in one batch step, all its jobs together (the memory budget of a batch)', int)
    .option('--checkpoint-every <steps>', 'steps between a job\'s checkpoints', int, 100)
    .option('--lock-duration <ms>', 'how long a job\'s lock lasts unless renewed: a killed worker\'s job is taken again after about this long', int)
    .option('--stalled-interval <ms>', 'how often to look for jobs of killed workers', int)
    .action(async (o) => {
      const { createTrainingWorker } = require('../workers') as typeof import('../workers');
      const log = (line: string) => console.log(line);
      const w = createTrainingWorker({
        connection: connectionOf(o.redis), queue: o.queue, concurrency: o.concurrency, batchAdapters: o.batchAdapters, maxBatchRows: o.maxBatchRows, checkpointEvery: o.checkpointEvery,
        lockDuration: o.lockDuration, stalledInterval: o.stalledInterval, log,
      });
      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) process.exit(1);  // a second signal: now
        stopping = true;
        log(`${signal}: finishing the current step, checkpointing and handing jobs back`);
        w.close().then(() => process.exit(0), (e: Error) => {
          console.error(`fused-lora worker: ${e.message}`);
          process.exit(1);
        });
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
      await w.worker.waitUntilReady();
      log(`worker ${process.pid} on queue ${o.queue}: up to ${o.batchAdapters} adapters per batch, ${o.concurrency ?? o.batchAdapters} jobs at once`);
    });

  cmd.command('submit')
    .description('add a training job (what `fused-lora train` takes, and --out) to a Redis queue of training workers')
    .requiredOption('--redis <url>', 'Redis server, redis://host:port', redisUrl)
    .requiredOption('--queue <name>', 'queue name')
    .requiredOption('--model <file>', 'model description (JSON), at a path the workers see')
    .requiredOption('--data <file>', 'training data (.jsonl or .safetensors), at a path the workers see')
    .requiredOption('--out <dir>', 'adapter directory the worker writes')
    .option('--steps <n>', 'optimizer steps', int)
    .option('--batch-size <n>', 'rows per step', int)
    .option('--lr <x>', 'learning rate', positive)
    .option('--seed <n>', 'seed for the adapters and the order of rows (a base without weights is drawn from the model file\'s seed)', int)
    .addOption(new Option('--dtype <dtype>', 'the frozen layers\' and activations\' dtype, as train\'s --dtype (jobs batch only with jobs of the same)').choices(DEMO_DTYPES))
    .addOption(new Option('--quantize <format>', 'the LoRA targets\' W quantized, as train\'s --quantize (jobs batch only with jobs of the same)').choices(DEMO_QUANTIZE))
    .option('--wait', 'follow the job to its end: progress, then the adapter\'s path and final loss')
    .option('--no-progress', 'no progress bar while waiting')
    .action(async (o) => {
      const { Queue, QueueEvents } = require('bullmq') as typeof import('bullmq');
      const { enqueueTraining, waitForTraining } = require('../workers') as typeof import('../workers');
      const connection = connectionOf(o.redis);
      const queue = new Queue(o.queue, { connection });
      const events = o.wait ? new QueueEvents(o.queue, { connection }) : null;
      try {
        await events?.waitUntilReady();  // listening before the job exists, so no event is missed
        const job = await enqueueTraining(queue, {
          model: o.model, data: o.data, out: o.out, steps: o.steps, batchSize: o.batchSize, lr: o.lr, seed: o.seed, dtype: o.dtype, quantize: o.quantize,
        });
        console.log(`submitted job ${job.id} to queue ${o.queue}`);
        if (!events) return;
        const { SingleBar } = require('cli-progress') as typeof import('cli-progress');
        const bar = o.progress ? new SingleBar({ format: 'training [{bar}] {value}/{total} steps | loss {loss}', hideCursor: true }) : null;
        let started = false;
        const onProgress = (p: TrainingProgress) => {
          if (!bar) return;
          if (!started) bar.start(p.steps, 0, { loss: '-' });
          started = true;
          bar.update(p.step, { loss: p.loss.toExponential(3) });
        };
        try {
          const r = await waitForTraining(job, events, onProgress);
          bar?.stop();
          console.log(`trained ${r.steps} steps${r.resumedFrom ? ` (resumed from step ${r.resumedFrom})` : ''}: loss ${r.firstLoss.toExponential(3)} -> ${r.lastLoss.toExponential(3)}; adapter written to ${r.adapter}${r.base === path.join(r.adapter, DRAWN_BASE) ? `, with the base it drew as ${r.base}` : ''}`);
        } catch (e) {
          bar?.stop();
          // The job's reason carries the worker's error code ("ERR_SHAPE: worker: ..."): the CLI's one-line form.
          const m = /^(ERR_[A-Z_]+): ([\s\S]*)$/.exec((e as Error).message);
          console.error(`fused-lora: ${m ? m[1] : 'ERR_BACKEND'}: submit: job ${job.id} failed: ${m ? m[2] : (e as Error).message}`);
          process.exitCode = 1;
        }
      } finally {
        await events?.close();
        await queue.close();
      }
    });
}
