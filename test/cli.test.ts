// The `fused-lora` command as a user runs it (the compiled dist/cli/index.js in a child process).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Linear, LinearLoRA, loadAdapter, writeSafetensors } from '../lib/index';
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

describe('fused-lora bench', () => {
  it('in a clone, is the harness in bench/ with its own options', () => {
    const r = run('bench', '--help');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/--M <list>/);
    expect(r.stdout).toMatch(/--no-peer/);
  });

  it('without the harness (an npm install ships no bench/), says so in one line and exits 1', () => {
    // The package as npm installs it: dist/, package.json, the native build, the runtime dependencies.
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
    expect(lines[0]).toMatch(/^fused-lora bench: the benchmark harness is not installed \(.*bench[/\\]dist[/\\]bench\.js is missing\)/);
    expect(r.stdout).toBe('');
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
