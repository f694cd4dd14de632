// `fused-lora demo` and `fused-lora train` on a reduced-precision frozen base (--dtype bfloat16,
// --quantize int8 | nf4), as a user runs them (dist/cli/index.js in a child process); and the
// training jobs of the workers, which take neither.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readSafetensors } from '../lib/index';
import { LoraError } from '../lib/errors';
import { checkTrainingJob } from '../lib/workers/job';

const cli = path.join(__dirname, '..', 'dist', 'cli', 'index.js');
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
const examples = path.join(__dirname, '..', 'examples', 'train');
const model = path.join(examples, 'model.json');
const data = path.join(examples, 'data.jsonl');

function workdir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'fused-lora-cli-lowp-'));
}

/** stderr of a failed run: exactly one line "fused-lora: <code>: ...", exit code 1, no stack. */
function oneLine(res: ReturnType<typeof run>): string {
  expect(res.status).toBe(1);
  const lines = res.stderr.trim().split('\n');
  expect(lines, res.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^fused-lora: [A-Z_]+: /);
  expect(res.stderr).not.toMatch(/\n\s+at /);
  return lines[0];
}

const number = (text: string, re: RegExp) => Number(re.exec(text)?.[1]);

/** A demo run that succeeded on a base in `format` holding `bytesRatio` of float32's bytes: its output and its first and last loss. */
function demoOn(format: string, bytesRatio: number, ...args: string[]): { out: string; first: number; last: number } {
  const res = run('demo', ...args);
  expect(res.stderr).toBe('');
  expect(res.status).toBe(0);
  const out = res.stdout;
  expect(out).toMatch(new RegExp(`base: W in ${format}`));
  expect(number(out, /MiB resident, ([\d.]+)x of float32's/)).toBeCloseTo(bytesRatio, 3);
  const [, first, last] = /loss ([\d.e+-]+) -> ([\d.e+-]+)/.exec(out)!.map(Number);
  return { out, first, last };
}

describe('fused-lora demo --dtype / --quantize', () => {
  it.each([
    [['--dtype', 'bfloat16'], 'bfloat16', 0.5, 2 ** -7],
    [['--quantize', 'int8'], 'int8', 0.251, 1e-5],
    [['--quantize', 'nf4'], 'nf4', 0.141, 1e-5],
    [['--dtype', 'bfloat16', '--quantize', 'nf4'], 'nf4', 0.141, 2 ** -7],
  ] as const)('%j trains (loss falls), reports the format, the resident bytes and the recovered update; fused and unfused agree within the dtype\'s bound; the reload is exact', (flags, format, bytesRatio, bound) => {
    const dir = workdir();
    const { out, first, last } = demoOn(format, bytesRatio, '--steps', '100', '--no-progress', '--out', dir, ...flags);
    expect(last).toBeLessThan(first / 4);
    expect(number(out, /\|\|scaling\*A\*B - dW\|\| \/ \|\|dW\|\| = ([\d.e+-]+)/)).toBeLessThan(1);
    const agree = number(out, /outputs agree to ([\d.e+-]+) \(bound/);
    expect(number(out, /\(bound ([\d.e+-]+):/)).toBeCloseTo(bound, 4);
    expect(agree).toBeLessThanOrEqual(bound);
    expect(out).toMatch(/reloaded layer's outputs differ by at most 0$/m);
    if (format === 'nf4') expect(out).toMatch(/I = 1024 instead of 1000/);
    expect(fs.readdirSync(dir).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    fs.rmSync(dir, { recursive: true });
  });

  it.each([
    [['--dtype', 'float16'], /^fused-lora: ERR_ARGUMENT: option '--dtype <dtype>' argument 'float16' is invalid\. Allowed choices are float32, bfloat16; see fused-lora demo --help$/],
    [['--quantize', 'int4'], /^fused-lora: ERR_ARGUMENT: option '--quantize <format>' argument 'int4' is invalid\. Allowed choices are int8, nf4; see fused-lora demo --help$/],
    [['--adapters', '4', '--quantize', 'nf5'], /^fused-lora: ERR_ARGUMENT: option '--quantize <format>' argument 'nf5' is invalid\. Allowed choices are int8, nf4; see fused-lora demo --help$/],
  ])('%j fails in one line before training', (flags, message) => {
    const res = run('demo', '--no-progress', ...flags);
    expect(oneLine(res)).toMatch(message);
    expect(res.stdout).toBe('');
  });

  it.each([
    [['--quantize', 'nf4'], 'nf4', 0.141, 1e-5],
    [['--dtype', 'bfloat16'], 'bfloat16', 0.5, 2 ** -7],
    [['--dtype', 'bfloat16', '--quantize', 'int8'], 'int8', 0.251, 2 ** -7],
  ] as const)('--adapters 3 %j: the adapters train together on that base, one batch agrees with one by one within the bound, each reloads exactly', (flags, format, bytesRatio, bound) => {
    const dir = workdir();
    const { out, first, last } = demoOn(format, bytesRatio, '--adapters', '3', '--steps', '60', '--no-progress', '--out', dir, ...flags);
    expect(last).toBeLessThan(first);
    expect(number(out, /\(bound ([\d.e+-]+)\)/)).toBeCloseTo(bound, 4);  // printed to two digits
    expect(number(out, /y, dx, dA, dB agree to ([\d.e+-]+) \(bound/)).toBeLessThanOrEqual(bound);
    expect(out).toMatch(/reloaded, the outputs differ by at most 0$/m);
    expect(fs.readdirSync(dir).sort()).toEqual(['task0', 'task1', 'task2']);
    fs.rmSync(dir, { recursive: true });
  });

  it('--help lists both flags with their choices', () => {
    const res = run('demo', '--help');
    expect(res.status).toBe(0);
    const help = res.stdout.replace(/\s+/g, ' ');  // commander wraps its lines
    expect(help).toMatch(/--dtype <dtype>[^]*choices: "float32", "bfloat16", default: "float32"/);
    expect(help).toMatch(/--quantize <format>[^]*choices: "int8", "nf4"/);
  });
});

describe('fused-lora train --dtype / --quantize', () => {
  const train = (out: string, ...flags: string[]) =>
    run('train', '--model', model, '--data', data, '--out', out, '--steps', '60', '--no-progress', ...flags);

  it.each([
    [['--dtype', 'bfloat16'], /^base: activations bfloat16: the frozen layers hold 1352 bytes \(0\.500x/m],
    [['--quantize', 'int8'], /^base: LoRA targets' W in int8, activations float32: the frozen layers hold 928 bytes/m],
    [['--dtype', 'bfloat16', '--quantize', 'int8'], /^base: LoRA targets' W in int8, activations bfloat16: /m],
  ])('%j trains: the loss falls, the adapter and the base it drew are written', (flags, base) => {
    const dir = workdir();
    const res = train(path.join(dir, 'adapter'), ...flags);
    expect(res.stderr).toBe('');
    expect(res.status).toBe(0);
    expect(res.stdout).toMatch(base);
    const [, first, last] = /loss ([\d.e+-]+) -> ([\d.e+-]+)/.exec(res.stdout)!.map(Number);
    expect(last).toBeLessThan(first / 5);
    expect(fs.readdirSync(path.join(dir, 'adapter')).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors', 'base.safetensors']);
    fs.rmSync(dir, { recursive: true });
  });

  it('a bfloat16 base it drew is written as BF16, and trains again as weights to the same adapter', async () => {
    const dir = workdir();
    const first = path.join(dir, 'first');
    expect(train(first, '--dtype', 'bfloat16').status).toBe(0);
    const base = await readSafetensors(path.join(first, 'base.safetensors'));
    expect(Object.keys(base.tensors).sort()).toEqual(['fc1.bias', 'fc1.weight', 'fc2.bias', 'fc2.weight']);
    expect(Object.values(base.tensors).every((t) => t.dtype === 'BF16')).toBe(true);
    const spec = JSON.parse(fs.readFileSync(model, 'utf8'));
    fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify({ ...spec, weights: 'first/base.safetensors' }));
    const again = path.join(dir, 'again');
    const res = run('train', '--model', path.join(dir, 'model.json'), '--data', data, '--out', again, '--steps', '60', '--no-progress', '--dtype', 'bfloat16');
    expect(res.status, res.stderr).toBe(0);
    const a = await readSafetensors(path.join(first, 'adapter_model.safetensors'));
    const b = await readSafetensors(path.join(again, 'adapter_model.safetensors'));
    for (const name of Object.keys(a.tensors)) expect(b.tensors[name].data, name).toEqual(a.tensors[name].data);
    fs.rmSync(dir, { recursive: true });
  });

  it.each([
    [['--dtype', 'fp16'], /^fused-lora: ERR_ARGUMENT: option '--dtype <dtype>' argument 'fp16' is invalid\. Allowed choices are float32, bfloat16; see fused-lora train --help$/],
    [['--quantize', 'q4'], /^fused-lora: ERR_ARGUMENT: option '--quantize <format>' argument 'q4' is invalid\. Allowed choices are int8, nf4; see fused-lora train --help$/],
    // The example's fc1 has 16 inputs: nf4's blocks of 64 do not fit, and the layer is named.
    [['--quantize', 'nf4'], /^fused-lora: ERR_SHAPE: applyLoRA: expected targets whose inputs are a multiple of 64 for nf4 .* for options\.quantize but received 'nf4' for fc1, a Linear of 16 inputs/],
  ])('%j fails in one line and writes nothing', (flags, message) => {
    const dir = workdir();
    const res = train(path.join(dir, 'adapter'), ...flags);
    expect(oneLine(res)).toMatch(message);
    expect(fs.existsSync(path.join(dir, 'adapter'))).toBe(false);
    fs.rmSync(dir, { recursive: true });
  });

  it('--help lists both flags with their choices', () => {
    const res = run('train', '--help');
    expect(res.status).toBe(0);
    const help = res.stdout.replace(/\s+/g, ' ');  // commander wraps its lines
    expect(help).toMatch(/--dtype <dtype>[^]*choices: "float32", "bfloat16", default: "float32"/);
    expect(help).toMatch(/--quantize <format>[^]*LoRA targets' frozen W[^]*choices: "int8", "nf4"/);
  });
});

describe('training jobs take dtype and quantize, as train does', () => {
  it('a job with either is accepted as it is', () => {
    const job = { model: '/m.json', data: '/d.jsonl', out: '/o', dtype: 'bfloat16', quantize: 'nf4' } as const;
    expect(checkTrainingJob('submit', job)).toEqual(job);
  });

  it.each([['dtype', 'float16', "'float32' or 'bfloat16'"], ['quantize', 'int4', "'int8' or 'nf4'"]])('a job with %s %j is refused by name, listing the choices', (key, value, choices) => {
    const job = { model: '/m.json', data: '/d.jsonl', out: '/o', [key]: value };
    let err: unknown;
    try {
      checkTrainingJob('submit', job);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(LoraError);
    expect((err as LoraError).code).toBe('ERR_ARGUMENT');
    expect((err as LoraError).message).toBe(`submit: expected ${choices} for job.${key} but received string "${value}"`);
  });
});
