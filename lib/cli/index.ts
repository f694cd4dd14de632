#!/usr/bin/env node
// The `fused-lora` command: `demo` (the seed's example, trained), `train` (adapters for a small
// Sequential model described in JSON), `bench` (the CPU benchmark harness, bench/cpu/ built to
// bench/dist/, which the package ships), and `worker` and `submit` (training over a Redis queue). Argument parsing is commander's. Every failure ends as one
// line on stderr, "fused-lora: <code>: <what, where, what to do>", and exit code 1; --debug adds the stack.
import fs from 'node:fs';
import path from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { DEMO_DTYPES, DEMO_QUANTIZE, runDemo } from '../demo';
import { MAX_DEMO_ADAPTERS, runMultiDemo } from '../demo-multi';
import { errorAt, LoraError } from '../errors';
import { runTrain } from './train';

function int(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

function adapterCount(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > MAX_DEMO_ADAPTERS) throw new InvalidArgumentError(`expected an integer from 1 to ${MAX_DEMO_ADAPTERS}`);
  return n;
}

function positive(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number');
  return n;
}

/** --dtype and --quantize, as demo and train take them: the frozen layers' and activations' dtype, and which W are quantized. */
function precisionOptions(c: Command, quantized: string): Command {
  return c
    .addOption(new Option('--dtype <dtype>', 'the dtype of the frozen layers and the activations: bfloat16 halves W\'s bytes (A, B and AdamW stay float32)')
      .choices(DEMO_DTYPES).default('float32'))
    .addOption(new Option('--quantize <format>', `hold ${quantized} quantized: int8 (a scale per output) or nf4 (QLoRA's 4-bit code, blocks of 64 along I)`)
      .choices(DEMO_QUANTIZE));
}

export function program(): Command {
  const cmd = new Command('fused-lora').description('LoRA for Node.js with fused native kernels')
    .option('--debug', 'print the stack of a failure');

  const demo = cmd.command('demo')
    .description('train the seed example (W 1000 x 10000, r = 10) on a hidden rank-10 update, save and reload the adapter')
    .option('--steps <n>', 'step limit', int, 600)
    .option('--lr <x>', 'AdamW learning rate', positive, 1e-2)
    .option('--out <dir>', 'where to write the adapter (default: a temporary directory)')
    .addOption(new Option('--adapters [k]', `train k different hidden teachers at once in one MultiLoRALinear batch (1 to ${MAX_DEMO_ADAPTERS}; 8 when no k is given) and time it against training them one by one`)
      .preset('8').argParser(adapterCount))
    .option('--no-progress', 'no progress bar');
  precisionOptions(demo, 'the frozen W')
    .action(async (o) => {
      const progress = o.progress && process.stderr.isTTY !== false;
      if (o.adapters !== undefined) {
        const r = await runMultiDemo({ adapters: o.adapters, maxSteps: o.steps, lr: o.lr, out: o.out, dtype: o.dtype, quantize: o.quantize, progress });
        if (!(Math.max(r.oneByOneRelErr.y, r.oneByOneRelErr.dx, r.oneByOneRelErr.dA, r.oneByOneRelErr.dB) <= r.agreementTolerance) || r.reloadMaxAbsDiff !== 0) {
          console.error('fused-lora: ERR_BACKEND: demo: the one-batch and one-by-one steps disagree, or a reloaded adapter differs');
          process.exitCode = 1;
        }
        return;
      }
      const r = await runDemo({ maxSteps: o.steps, lr: o.lr, out: o.out, dtype: o.dtype, quantize: o.quantize, progress });
      if (!(r.fusedUnfusedRelErr <= r.agreementTolerance) || r.reloadMaxAbsDiff !== 0) {
        console.error('fused-lora: ERR_BACKEND: demo: fused and unfused disagree, or the reloaded adapter differs');
        process.exitCode = 1;
      }
    });

  const train = cmd.command('train')
    .description('fit LoRA adapters for a Sequential model described by a JSON file; writes a PEFT adapter')
    .requiredOption('--model <file>', 'model description (JSON; see README "fused-lora train")')
    .requiredOption('--data <file>', 'training data: .safetensors (tensors x and y, or x and labels) or .jsonl ({"x": [...], "y": [...]} or {"x": [...], "label": k} per line)')
    .requiredOption('--out <dir>', 'adapter directory to write')
    .option('--steps <n>', 'optimizer steps', int)
    .option('--batch-size <n>', 'rows per step', int)
    .option('--lr <x>', 'learning rate', positive)
    .option('--seed <n>', 'seed for the adapters and the order of rows (a base without weights is drawn from the model file\'s seed)', int)
    .option('--no-progress', 'no progress bar');
  precisionOptions(train, "the LoRA targets' frozen W (other layers stay in --dtype)")
    .action(async (o) => {
      await runTrain({
        model: o.model, data: o.data, out: o.out, steps: o.steps, batchSize: o.batchSize, lr: o.lr, seed: o.seed,
        dtype: o.dtype, quantize: o.quantize, progress: o.progress,
      });
    });

  registerBench(cmd);
  (require('./workers') as typeof import('./workers')).registerWorkerCommands(cmd);  // `worker`, `submit` (lib/cli/workers.ts)
  // Commander's own messages (unknown option, missing argument) come back as errors, to be printed in
  // the one-line form below; its help and version output stay as they are.
  const quiet = (c: Command) => {
    c.exitOverride().configureOutput({ writeErr: () => {}, outputError: () => {} });
    c.commands.forEach(quiet);
  };
  quiet(cmd);
  return cmd;
}

/** The one line a failure prints: "fused-lora: <code>: <message>", with what to do for commander's. */
export function failureLine(err: unknown, argv: readonly string[]): string {
  if (err instanceof LoraError) return `fused-lora: ${err.code}: ${err.message}`;
  if (err instanceof CommanderError && err.code === 'commander.help') {
    return 'fused-lora: ERR_ARGUMENT: expected a command (demo, train, bench, worker or submit); see fused-lora --help';
  }
  if (err instanceof CommanderError) {
    const what = err.message.replace(/^error: /, '').replace(/\s*\n\s*/g, ' ').replace(/\.$/, '');
    const sub = argv.slice(2).find((a) => !a.startsWith('-'));
    return `fused-lora: ERR_ARGUMENT: ${what}; see fused-lora ${sub && ['demo', 'train', 'bench', 'worker', 'submit'].includes(sub) ? `${sub} ` : ''}--help`;
  }
  const e = err as NodeJS.ErrnoException;
  const code = typeof e?.code === 'string' ? e.code : 'ERR_INTERNAL';
  return `fused-lora: ${code}: ${(e?.message ?? String(err)).replace(/\s*\n\s*/g, ' ')} (--debug prints the stack)`;
}

/**
 * `fused-lora bench`: the harness registers its own command and options. It ships in the package
 * (bench/dist/, bench/peers/); a checkout whose build skipped it gets a one-line failure saying so.
 */
function registerBench(cmd: Command): void {
  const harness = path.join(__dirname, '..', '..', 'bench', 'dist', 'bench.js');
  if (fs.existsSync(harness)) {
    (require(harness) as { registerBench(c: Command): void }).registerBench(cmd);
    return;
  }
  cmd.command('bench')
    .description('time fused vs unfused vs the base GEMM vs PyTorch (the harness is not built here)')
    .allowUnknownOption().allowExcessArguments()
    .action(() => {
      throw errorAt('ERR_IO', 'bench', `the benchmark harness ${harness} is missing: \`npm run build:ts\` builds it (bench/cpu/ to bench/dist/)`);
    });
}

if (require.main === module) {
  program().parseAsync(process.argv).catch((err: unknown) => {
    // Help and version exit through the same override, successfully.
    if (err instanceof CommanderError && (err.exitCode === 0 || err.code === 'commander.helpDisplayed' || err.code === 'commander.version')) {
      process.exitCode = err.exitCode;
      return;
    }
    console.error(failureLine(err, process.argv));
    if (process.argv.includes('--debug') && err instanceof Error && err.stack) console.error(err.stack);
    process.exitCode = 1;
  });
}
