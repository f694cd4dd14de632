// The `fused-lora` command as a user runs it (the compiled dist/cli/index.js in a child process).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { applyLoRA, GELU, Linear, LinearLoRA, loadAdapter, loadSafetensors, Sequential, tensor, writeSafetensors } from '../lib/index';
import { randomArray } from './reference';

const cli = path.join(__dirname, '..', 'dist', 'cli', 'index.js');
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });

function workdir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'fused-lora-cli-'));
}

/** A regression problem: y = teacher(x) for a 2-layer teacher that differs from the base by a low-rank update. */
function regressionData(N: number, I: number, O: number) {
  const W = randomArray(O * I, 3, 1 / Math.sqrt(I));
  const delta = randomArray(O * I, 4, 0.2 / Math.sqrt(I));
  const x = randomArray(N * I, 5);
  const y = new Float32Array(N * O);
  for (let n = 0; n < N; n++)
    for (let o = 0; o < O; o++) {
      let acc = 0;
      for (let i = 0; i < I; i++) acc += x[n * I + i] * (W[o * I + i] + (o % 3 === 0 ? delta[o * I + i] : 0));
      y[n * O + o] = acc;
    }
  return { W, x, y };
}

describe('fused-lora train', () => {
  it('fits the adapter of a JSON-described model on .jsonl data and writes a PEFT adapter that loads back', async () => {
    const dir = workdir();
    const I = 12, O = 6, N = 200;
    const { W, x, y } = regressionData(N, I, O);
    await writeSafetensors(path.join(dir, 'base.safetensors'), { 'fc.weight': { data: W, shape: [O, I] } });
    fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify({
      layers: [{ name: 'fc', type: 'linear', in: I, out: O, bias: false }], weights: 'base.safetensors',
      lora: { rank: 3, alpha: 6, targets: ['fc'] }, loss: 'mse', optimizer: { type: 'adamw', lr: 0.02, weightDecay: 0 },
      steps: 300, batchSize: 50, seed: 3, baseModel: 'toy',
    }));
    const rows = Array.from({ length: N }, (_, n) => JSON.stringify({ x: Array.from(x.subarray(n * I, (n + 1) * I)), y: Array.from(y.subarray(n * O, (n + 1) * O)) }));
    fs.writeFileSync(path.join(dir, 'data.jsonl'), rows.join('\n'));
    const out = path.join(dir, 'adapter');
    const res = run('train', '--model', path.join(dir, 'model.json'), '--data', path.join(dir, 'data.jsonl'), '--out', out, '--no-progress');
    expect(res.stderr).toBe('');
    expect(res.status).toBe(0);
    const [, first, last] = /loss ([\d.e+-]+) -> ([\d.e+-]+)/.exec(res.stdout)!.map(Number);
    expect(last).toBeLessThan(first / 20);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'))).toMatchObject({ r: 3, lora_alpha: 6, target_modules: ['fc'], base_model_name_or_path: 'toy' });
    const layer = new LinearLoRA(new Linear(I, O, { weight: W }), 3);
    await loadAdapter(out, { fc: layer });
    expect(layer.lora.B.dataSync().some((v) => v !== 0)).toBe(true);
    fs.rmSync(dir, { recursive: true });
  });

  it('trains a classifier with cross-entropy from a .safetensors file', async () => {
    const dir = workdir();
    const I = 8, H = 16, C = 3, N = 150;
    const x = randomArray(N * I, 9);
    const labels = new Float32Array(N).map((_, n) => (x[n * I] > 0.3 ? 0 : x[n * I + 1] > 0 ? 1 : 2));
    await writeSafetensors(path.join(dir, 'data.safetensors'), { x: { data: x, shape: [N, I] }, labels: { data: labels, shape: [N] } });
    fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify({
      layers: [{ name: 'fc1', type: 'linear', in: I, out: H }, { name: 'act', type: 'relu' }, { name: 'fc2', type: 'linear', in: H, out: C }],
      lora: { rank: 4, targets: ['fc1', 'fc2'] }, loss: 'cross_entropy', optimizer: { type: 'sgd', lr: 0.05, momentum: 0.9 }, steps: 150, batchSize: 30,
    }));
    const res = run('train', '--model', path.join(dir, 'model.json'), '--data', path.join(dir, 'data.safetensors'), '--out', path.join(dir, 'a'), '--no-progress');
    expect(res.status).toBe(0);
    const [, first, last] = /loss ([\d.e+-]+) -> ([\d.e+-]+)/.exec(res.stdout)!.map(Number);
    expect(last).toBeLessThan(first / 2);
    expect(fs.existsSync(path.join(dir, 'a', 'adapter_model.safetensors'))).toBe(true);
    fs.rmSync(dir, { recursive: true });
  });

  it('a bad model description fails with the code and the JSON path, and writes nothing', () => {
    const dir = workdir();
    fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify({ layers: [{ name: 'fc', type: 'linear', in: 0, out: 3 }] }));
    fs.writeFileSync(path.join(dir, 'data.jsonl'), '{"x":[1],"y":[1,2,3]}');
    const res = run('train', '--model', path.join(dir, 'model.json'), '--data', path.join(dir, 'data.jsonl'), '--out', path.join(dir, 'a'));
    expect(res.status).toBe(1);
    expect(res.stderr).toMatch(/ERR_ARGUMENT.*layers\[0\]\.in/);
    expect(fs.existsSync(path.join(dir, 'a'))).toBe(false);
    fs.rmSync(dir, { recursive: true });
  });

  it('a misspelt key in model.json (optimizer "lrr") fails naming it and the key it meant, and writes nothing', () => {
    const dir = workdir();
    fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify({
      layers: [{ name: 'fc', type: 'linear', in: 1, out: 3 }], optimizer: { type: 'adamw', lrr: 0.01 },
    }));
    fs.writeFileSync(path.join(dir, 'data.jsonl'), '{"x":[1],"y":[1,2,3]}');
    const res = run('train', '--model', path.join(dir, 'model.json'), '--data', path.join(dir, 'data.jsonl'), '--out', path.join(dir, 'a'));
    expect(res.status).toBe(1);
    expect(res.stderr).toContain("fused-lora: ERR_ARGUMENT: model: expected optimizer keys among type, lr, betas, eps, weightDecay for optimizer.lrr but received an unknown key (did you mean 'lr'?)");
    expect(fs.existsSync(path.join(dir, 'a'))).toBe(false);
    fs.rmSync(dir, { recursive: true });
  });

  it('prints usage for an unknown command', () => {
    const res = run('frobnicate');
    expect(res.status).not.toBe(0);
    expect(res.stderr).toMatch(/unknown command/);
  });
});

describe('fused-lora: every failure is one line, and train checks what it can before the first step', () => {
  const examples = path.join(__dirname, '..', 'examples', 'train');
  const model = path.join(examples, 'model.json');
  const data = path.join(examples, 'data.jsonl');

  /** stderr of a failed run: exactly one line "fused-lora: <code>: ...", exit code 1, no stack. */
  function oneLine(res: ReturnType<typeof run>): string {
    expect(res.status).toBe(1);
    const lines = res.stderr.trim().split('\n');
    expect(lines, res.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(/^fused-lora: [A-Z_]+: /);
    expect(res.stderr).not.toMatch(/\n\s+at /);
    return lines[0];
  }

  it("the README's example (examples/train) trains, and writes the base it drew beside the adapter, which trains again as weights", async () => {
    const dir = workdir();
    const out = path.join(dir, 'adapter');
    const res = run('train', '--model', model, '--data', data, '--out', out, '--no-progress');
    expect(res.stderr).toBe('');
    expect(res.status).toBe(0);
    const [, first, last] = /loss ([\d.e+-]+) -> ([\d.e+-]+)/.exec(res.stdout)!.map(Number);
    expect(last).toBeLessThan(first / 10);
    const base = await loadSafetensors(path.join(out, 'base.safetensors'));
    expect(Object.keys(base).sort()).toEqual(['fc1.bias', 'fc1.weight', 'fc2.bias', 'fc2.weight']);
    // The drawn base is the one trained on: the adapter loaded onto it fits the data as the run did.
    const spec = JSON.parse(fs.readFileSync(model, 'utf8'));
    fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify({ ...spec, weights: 'adapter/base.safetensors', steps: 1 }));
    const again = run('train', '--model', path.join(dir, 'model.json'), '--data', data, '--out', path.join(dir, 'b'), '--no-progress');
    expect(again.status).toBe(0);
    expect(fs.existsSync(path.join(dir, 'b', 'base.safetensors'))).toBe(false);  // it has a base file: none is drawn
    const net = new Sequential({ fc1: new Linear(16, 32, { weight: base['fc1.weight'], bias: base['fc1.bias'] }), act: new GELU(), fc2: new Linear(32, 4, { weight: base['fc2.weight'], bias: base['fc2.bias'] }) });
    const layers = applyLoRA(net, { rank: 4, alpha: 8, targets: ['fc1', 'fc2'] });
    await loadAdapter(out, layers);
    const rows = fs.readFileSync(data, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { x: number[]; y: number[] });
    const y = net.forward(tensor(Float32Array.from(rows.flatMap((r) => r.x)), [rows.length, 16])).dataSync();
    const target = rows.flatMap((r) => r.y);
    const mse = target.reduce((a, t, i) => a + (y[i] - t) ** 2, 0) / target.length;
    expect(mse).toBeLessThan(first / 10);
    fs.rmSync(dir, { recursive: true });
  });

  it('a missing data file is one line naming it', () => {
    const line = oneLine(run('train', '--model', model, '--data', '/nonexistent/data.jsonl', '--out', path.join(workdir(), 'a')));
    expect(line).toMatch(/^fused-lora: ERR_IO: data: \/nonexistent\/data\.jsonl: cannot be read: ENOENT/);
  });

  it.each([
    ['null', '{"x":[1,null],"y":[1]}', 'line 2: expected a finite number for x[1] but received null'],
    ['a string', '{"x":[1,2],"y":["3"]}', 'line 2: expected a finite number for y[0] but received "3"'],
    ['1e999', '{"x":[1e999,2],"y":[1]}', 'line 2: expected a finite number for x[0] but received Infinity'],
    ['a short row', '{"x":[1],"y":[1]}', 'line 2: expected "x" of length 2 (as on the first line) but received length 1'],
    ['an unknown key', '{"x":[1,2],"yy":[1]}', 'line 2: expected keys among x, y, label but received the unknown key "yy" (did you mean \'y\'?)'],
  ])('a .jsonl value that is %s is refused at load, naming its line and field', (_, bad, what) => {
    const dir = workdir();
    fs.writeFileSync(path.join(dir, 'm.json'), JSON.stringify({ layers: [{ name: 'fc', type: 'linear', in: 2, out: 1 }], steps: 2 }));
    fs.writeFileSync(path.join(dir, 'd.jsonl'), `{"x":[1,2],"y":[1]}\n${bad}\n`);
    const line = oneLine(run('train', '--model', path.join(dir, 'm.json'), '--data', path.join(dir, 'd.jsonl'), '--out', path.join(dir, 'a')));
    expect(line).toBe(`fused-lora: ERR_IO: data: ${path.join(dir, 'd.jsonl')}: ${what}`);
    expect(fs.existsSync(path.join(dir, 'a'))).toBe(false);
    fs.rmSync(dir, { recursive: true });
  });

  it('a label out of range is found before the first step and named by its file line', () => {
    const dir = workdir();
    fs.writeFileSync(path.join(dir, 'm.json'), JSON.stringify({ layers: [{ name: 'head', type: 'linear', in: 2, out: 3 }], loss: 'cross_entropy', steps: 2 }));
    fs.writeFileSync(path.join(dir, 'd.jsonl'), '{"x":[1,2],"label":0}\n\n{"x":[1,2],"label":2}\n{"x":[1,2],"label":3}\n');
    const line = oneLine(run('train', '--model', path.join(dir, 'm.json'), '--data', path.join(dir, 'd.jsonl'), '--out', path.join(dir, 'a')));
    expect(line).toBe(`fused-lora: ERR_ARGUMENT: data: ${path.join(dir, 'd.jsonl')}: line 4: expected a label in 0..2 (layer head has 3 outputs) but received 3`);
    fs.rmSync(dir, { recursive: true });
  });

  it('a diverging run stops at the step whose loss is not finite, and writes no adapter', () => {
    const dir = workdir();
    const line = oneLine(run('train', '--model', model, '--data', data, '--out', path.join(dir, 'a'), '--lr', '1e30', '--no-progress'));
    expect(line).toMatch(/^fused-lora: ERR_NOT_FINITE: train: the loss is (NaN|Infinity) at step \d+ of 200 \(learning rate 1e\+30, last finite loss [\d.e+-]+\); no adapter was written: lower the learning rate, or set clipGradNorm$/);
    expect(fs.existsSync(path.join(dir, 'a'))).toBe(false);
    fs.rmSync(dir, { recursive: true });
  });

  it('a batch larger than the data takes all rows, and says so', () => {
    const dir = workdir();
    const res = run('train', '--model', model, '--data', data, '--out', path.join(dir, 'a'), '--batch-size', '100000', '--steps', '2', '--no-progress');
    expect(res.status).toBe(0);
    expect(res.stdout).toContain(`note: batch size 100000 is more than the 256 rows of ${data}; each step takes all 256`);
    fs.rmSync(dir, { recursive: true });
  });

  it('an --out that cannot be written is refused before training', () => {
    const dir = workdir();
    fs.writeFileSync(path.join(dir, 'file'), '');
    const started = Date.now();
    const line = oneLine(run('train', '--model', model, '--data', data, '--out', path.join(dir, 'file', 'a'), '--steps', '100000'));
    expect(line).toMatch(new RegExp(`^fused-lora: ERR_IO: train: --out ${path.join(dir, 'file', 'a').replace(/[/.]/g, '\\$&')} is not a directory that can be written: `));
    expect(Date.now() - started).toBeLessThan(60_000);  // 100000 steps would take far longer: it never started
    fs.rmSync(dir, { recursive: true });
  });

  it.each([
    [['train', '--model', 'm.json', '--data', 'd.jsonl', '--out', 'o', '--stpes', '3'], /^fused-lora: ERR_ARGUMENT: unknown option '--stpes' \(Did you mean --steps\?\); see fused-lora train --help$/],
    [['train', '--model', 'm.json'], /^fused-lora: ERR_ARGUMENT: required option '--data <file>' not specified; see fused-lora train --help$/],
    [['train', '--model', 'm.json', '--data', 'd', '--out', 'o', '--steps', '0'], /^fused-lora: ERR_ARGUMENT: option '--steps <n>' argument '0' is invalid\. expected a positive integer; see fused-lora train --help$/],
    [['demo', '--adapters', '0'], /^fused-lora: ERR_ARGUMENT: option '--adapters \[k\]' argument '0' is invalid\. expected an integer from 1 to 64; see fused-lora demo --help$/],
    [['demo', '--adapters', '65'], /^fused-lora: ERR_ARGUMENT: option '--adapters \[k\]' argument '65' is invalid\. expected an integer from 1 to 64; see fused-lora demo --help$/],
    [['demo', '--adapters', '2.5'], /^fused-lora: ERR_ARGUMENT: option '--adapters \[k\]' argument '2\.5' is invalid\. expected an integer from 1 to 64; see fused-lora demo --help$/],
    [['frobnicate'], /^fused-lora: ERR_ARGUMENT: unknown command 'frobnicate'; see fused-lora --help$/],
    [[], /^fused-lora: ERR_ARGUMENT: expected a command \(demo, train, bench, worker or submit\); see fused-lora --help$/],
  ])('usage mistakes are one line too: %j', (args, expected) => {
    expect(oneLine(run(...args))).toMatch(expected);
  });

  it('--debug adds the stack', () => {
    const res = run('--debug', 'train', '--model', '/nonexistent.json', '--data', data, '--out', 'o');
    expect(res.status).toBe(1);
    expect(res.stderr.split('\n')[0]).toMatch(/^fused-lora: ERR_IO: train: /);
    expect(res.stderr).toMatch(/\n\s+at /);
  });
});

describe('fused-lora bench', () => {
  it('in a clone, is the harness in bench/ with its own options', () => {
    const r = run('bench', '--help');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/--M <list>/);
    expect(r.stdout).toMatch(/--no-peer/);
  });

  it('where the harness was not built, says so in one line and exits 1', () => {
    // A checkout whose build skipped bench/: dist/, package.json, the native build, the dependencies.
    const dir = workdir();
    const root = path.join(__dirname, '..');
    fs.cpSync(path.join(root, 'dist'), path.join(dir, 'dist'), { recursive: true });
    fs.copyFileSync(path.join(root, 'package.json'), path.join(dir, 'package.json'));
    fs.symlinkSync(path.join(root, 'build'), path.join(dir, 'build'));
    fs.symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'));
    const r = spawnSync(process.execPath, [path.join(dir, 'dist', 'cli', 'index.js'), 'bench', '--quick'], { encoding: 'utf8', cwd: dir });
    expect(r.status).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^fused-lora: ERR_IO: bench: the benchmark harness .*bench[/\\]dist[/\\]bench\.js is missing: `npm run build:ts` builds it/);
    expect(r.stdout).toBe('');
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
