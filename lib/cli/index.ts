#!/usr/bin/env node
// The `fused-lora` command: `demo` (the seed's example, trained), `train` (adapters for a small
// Sequential model described in JSON), `bench`, and `worker` and `submit` (training over a Redis queue). Argument parsing is commander's.
import { Command, InvalidArgumentError } from 'commander';
import { runDemo } from '../demo';
import { LoraError } from '../errors';
import { runTrain } from './train';

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

export function program(): Command {
  const cmd = new Command('fused-lora').description('LoRA for Node.js with fused native kernels').showHelpAfterError();

  cmd.command('demo')
    .description('train the seed example (W 1000 x 10000, r = 10) on a hidden rank-10 update, save and reload the adapter')
    .option('--steps <n>', 'step limit', int, 600)
    .option('--lr <x>', 'AdamW learning rate', positive, 1e-2)
    .option('--out <dir>', 'where to write the adapter (default: a temporary directory)')
    .option('--no-progress', 'no progress bar')
    .action(async (o) => {
      const r = await runDemo({ maxSteps: o.steps, lr: o.lr, out: o.out, progress: o.progress && process.stderr.isTTY !== false });
      if (!(r.fusedUnfusedRelErr <= 1e-5) || r.reloadMaxAbsDiff !== 0) {
        console.error('FAIL: fused and unfused disagree, or the reloaded adapter differs');
        process.exitCode = 1;
      }
    });

  cmd.command('train')
    .description('fit LoRA adapters for a Sequential model described by a JSON file; writes a PEFT adapter')
    .requiredOption('--model <file>', 'model description (JSON; see README "fused-lora train")')
    .requiredOption('--data <file>', 'training data: .safetensors (tensors x and y, or x and labels) or .jsonl ({"x": [...], "y": [...]} or {"x": [...], "label": k} per line)')
    .requiredOption('--out <dir>', 'adapter directory to write')
    .option('--steps <n>', 'optimizer steps', int)
    .option('--batch-size <n>', 'rows per step', int)
    .option('--lr <x>', 'learning rate', positive)
    .option('--seed <n>', 'seed for initialisation and shuffling', int)
    .option('--no-progress', 'no progress bar')
    .action(async (o) => {
      await runTrain({ model: o.model, data: o.data, out: o.out, steps: o.steps, batchSize: o.batchSize, lr: o.lr, seed: o.seed, progress: o.progress });
    });

  (require('./bench') as typeof import('./bench')).registerBench(cmd);  // `fused-lora bench` (lib/cli/bench.ts)
  (require('./workers') as typeof import('./workers')).registerWorkerCommands(cmd);  // `worker`, `submit` (lib/cli/workers.ts)
  return cmd;
}

if (require.main === module) {
  program().parseAsync(process.argv).catch((err: unknown) => {
    if (err instanceof LoraError) {
      console.error(`fused-lora: ${err.code}: ${err.message}`);
    } else {
      console.error(err);
    }
    process.exitCode = 1;
  });
}
