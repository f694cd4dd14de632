// The core issue's measurements, in one run on this machine:
//   - SGEMM GFLOP/s at 2048³ (NN and NT), built-in kernel against the loaded BLAS, same process;
//   - the LoRA training step (forward + backward) fused and unfused at M = 2048, I = O = 2048, r = 16,
//     with the base GEMM (Linear.forward) alone for scale.
// Tasks alternate: each round runs every task a few times (tinybench), and we take the median of all
// samples, so drift on this shared machine lands on every task alike.
// Usage: node bench/core.mjs [--rounds N]   (after `npm install`); writes bench/results/<date>-<host>-core.json
import { execSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Bench } from 'tinybench';
import { Linear, LinearLoRA, backendInfo, tensor } from 'fused-lora';
import { native } from '../dist/binding.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '4' } } });
const rounds = Number(values.rounds);
const info = backendInfo().cpu;
if (info.blas === 'builtin') console.log('note: no BLAS loaded; the "blas" rows repeat the built-in GEMM');

const rand = (n) => {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.random() * 2 - 1;
  return a;
};

const tasks = {};
const meta = {};

// GEMM: C (2048, 2048) = A·B or A·Bᵀ.
const G = 2048;
const A = rand(G * G), Bm = rand(G * G), C = new Float32Array(G * G);
for (const backend of ['builtin', 'blas']) {
  for (const transB of [false, true]) {
    const name = `gemm ${transB ? 'NT' : 'NN'} 2048^3 ${backend}`;
    const be = backend === 'blas' && info.blas === 'builtin' ? 'builtin' : backend;
    tasks[name] = () => native.gemm({ transA: false, transB, M: G, N: G, K: G, alpha: 1, A, lda: G, B: Bm, ldb: G, beta: 0, C, ldc: G, backend: be });
    meta[name] = { flops: 2 * G ** 3 };
  }
}

// LoRA step at the shape.
const M = 2048, I = 2048, O = 2048, r = 16;
const base = new Linear(I, O, { seed: 1, bias: true });
const B0 = rand(r * O).map((v) => v * 0.01);
const fused = new LinearLoRA(base, r, { seed: 2, B: B0 });
const unfused = new LinearLoRA(base, r, { seed: 2, B: B0, fused: false });
const x = tensor(rand(M * I), [M, I]);
const dy = tensor(rand(M * O), [M, O]);
const baseFlops = 2 * M * I * O;
tasks['base GEMM (Linear.forward)'] = () => base.forward(x);
meta['base GEMM (Linear.forward)'] = { flops: baseFlops };
for (const [label, layer] of [['fused', fused], ['unfused', unfused]]) {
  tasks[`forward ${label}`] = () => layer.forward(x);
  tasks[`step ${label}`] = () => {
    layer.forward(x);
    layer.backward(dy);
  };
  meta[`forward ${label}`] = { flops: baseFlops + 4 * M * r * (I + O) / 2 };
  meta[`step ${label}`] = { flops: 2 * baseFlops + 2 * M * r * (3 * I + 3 * O) };
}

const samples = Object.fromEntries(Object.keys(tasks).map((k) => [k, []]));
for (let round = 0; round < rounds; round++) {
  const bench = new Bench({ iterations: 3, time: 0, warmup: round === 0, warmupIterations: 1, warmupTime: 0, retainSamples: true });
  for (const [name, fn] of Object.entries(tasks)) bench.add(name, fn);
  await bench.run();
  for (const t of bench.tasks) samples[t.name].push(...t.result.latency.samples);
  process.stdout.write(`round ${round + 1}/${rounds} done\n`);
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const rows = Object.keys(tasks).map((name) => {
  const ms = median(samples[name]);
  return { name, ms: +ms.toFixed(3), gflops: +(meta[name].flops / ms / 1e6).toFixed(1), samples: samples[name].length };
});
const get = (n) => rows.find((r) => r.name === n).ms;
const ratios = {
  'builtin/blas GFLOP/s, NN 2048^3': +(get('gemm NN 2048^3 blas') / get('gemm NN 2048^3 builtin')).toFixed(3),
  'builtin/blas GFLOP/s, NT 2048^3': +(get('gemm NT 2048^3 blas') / get('gemm NT 2048^3 builtin')).toFixed(3),
  'step fused / base': +(get('step fused') / get('base GEMM (Linear.forward)')).toFixed(3),
  'step unfused / base': +(get('step unfused') / get('base GEMM (Linear.forward)')).toFixed(3),
  'step unfused / fused': +(get('step unfused') / get('step fused')).toFixed(3),
  'forward fused / base': +(get('forward fused') / get('base GEMM (Linear.forward)')).toFixed(3),
};
console.table(rows);
console.table(ratios);

let commit = 'unknown';
try {
  commit = execSync('git rev-parse --short HEAD', { encoding: 'utf8' }).trim() + (execSync('git status --porcelain', { encoding: 'utf8' }).trim() ? '-dirty' : '');
} catch {}
const date = new Date().toISOString().slice(0, 10);
const host = os.hostname().replace(/[^A-Za-z0-9_.-]/g, '_');
const result = {
  date: new Date().toISOString(),
  machine: { host, cpu: os.cpus()[0]?.model, cores: os.cpus().length, memGiB: +(os.totalmem() / 2 ** 30).toFixed(1), node: process.version },
  backend: backendInfo().cpu,
  commit,
  command: `node bench/core.mjs --rounds ${rounds}`,
  shapes: { gemm: [G, G, G], step: { M, I, O, r } },
  rows,
  ratios,
};
const file = path.join(path.dirname(new URL(import.meta.url).pathname), 'results', `${date}-${host}-core.json`);
fs.writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
console.log(`wrote ${path.relative(process.cwd(), file)}`);
