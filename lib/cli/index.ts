#!/usr/bin/env node
// The `fused-lora` command: `demo` (the seed's example, trained), `train` (adapters for a small
// Sequential model described in JSON) and `bench` (the harness in bench/, where present). Argument
// parsing is commander's.
import fs from 'node:fs';
import path from 'node:path';
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

  registerBench(cmd);
  return cmd;
}

/**
 * `fused-lora bench`: the CPU benchmark harness lives in bench/ (bench/cpu/, built to bench/dist/),
 * which the npm package does not ship, with its devDependencies (tinybench). In a clone it registers
 * its own command and options; elsewhere the command is a one-line error saying so.
 */
function registerBench(cmd: Command): void {
  const harness = path.join(__dirname, '..', '..', 'bench', 'dist', 'bench.js');
  let reason: string | null = null;
  if (!fs.existsSync(harness)) {
    reason = `the benchmark harness is not installed (${path.relative(process.cwd(), harness) || harness} is missing): ` +
      'it lives in bench/ of a clone of the repository, where `npm ci` builds it';
  } else {
    try {
      require.resolve('tinybench', { paths: [path.dirname(harness)] });
    } catch {
      reason = 'the benchmark harness needs the devDependency tinybench: run `npm ci` in the clone';
    }
  }
  if (reason === null) {
    (require(harness) as { registerBench(c: Command): void }).registerBench(cmd);
    return;
  }
  const why = reason;
  cmd.command('bench')
    .description('time fused vs unfused vs the base GEMM vs PyTorch (needs a clone of the repository)')
    .allowUnknownOption().allowExcessArguments()
    .action(() => {
      console.error(`fused-lora bench: ${why}`);
      process.exitCode = 1;
    });
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
