// A training step of a tfjs model (forward, loss, backward, Adam) with LoRADense layers against the
// same model made of tfjs's own layers (the frozen Dense plus a low-rank branch of two bias-free
// Dense layers), side by side in one process, on the cpu and wasm backends. Two layers of I = O, so
// the second layer's dx is part of the step. Alternating rounds, medians; prints the ratios and
// writes bench/results/<date>-<host>-tfjs.json with the machine, commit, load and each peer's
// configuration. Also the layers alone (forward and backward from a given dy), to show how much of
// a step is tfjs's own loss and elementwise work, which both models share.
//
// Usage: npm run build:ts && node bench/tfjs-step.mjs [--M 512] [--size 1024] [--rank 16] [--rounds 5] [--out bench/results]
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import * as tfWasm from '@tensorflow/tfjs-backend-wasm';
import * as tfl from '@tensorflow/tfjs-layers';
import { backendInfo } from '../dist/index.js';
import { commit, machine } from './dist/bench.js';
import { Random } from '../dist/random.js';
import { median, quantile } from '../dist/stats.js';
import { LoRADense } from '../dist/tfjs/index.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({
  options: {
    M: { type: 'string', default: '512' }, size: { type: 'string', default: '1024' }, rank: { type: 'string', default: '16' },
    rounds: { type: 'string', default: '5' }, out: { type: 'string', default: path.join(root, 'bench', 'results') },
  },
});
const M = Number(values.M), I = Number(values.size), r = Number(values.rank), rounds = Number(values.rounds);
const LAYERS = 2;
const round3 = (v) => +v.toFixed(3);
const rand = (n, scale, seed) => new Random(seed).fillUniform(new Float32Array(n), scale);  // U(-scale, scale)

/**
 * Whether tfjs-backend-wasm runs threaded in Node when asked to: it turns threads off under Node
 * itself; forcing its flag is what a user would try. A fresh process, so a hung init cannot stall us.
 */
function wasmThreadsAttempt() {
  const code = `const tf = require('@tensorflow/tfjs-core'); const w = require('@tensorflow/tfjs-backend-wasm');
    tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true); w.setThreadsCount(${os.cpus().length});
    tf.setBackend('wasm').then((ok) => { console.log(JSON.stringify({ ok, threads: ok ? w.getThreadsCount() : 0 })); process.exit(0); },
      (e) => { console.log(JSON.stringify({ ok: false, error: String(e.message ?? e) })); process.exit(0); });`;
  try {
    const out = execFileSync(process.execPath, ['-e', code], { cwd: root, encoding: 'utf8', timeout: 30_000, stdio: ['ignore', 'pipe', 'ignore'] });
    return JSON.parse(out.trim().split('\n').pop());
  } catch (e) {
    return { ok: false, error: `no answer in 30 s (${e.message.split('\n')[0]})` };
  }
}

/** The frozen weights and initial adapters both models start from (B zero, as a new adapter). */
const frozen = Array.from({ length: LAYERS }, (_, l) => ({
  kernel: rand(I * I, 1 / Math.sqrt(I), 10 + l), bias: rand(I, 0.1, 20 + l), A: rand(I * r, 1 / Math.sqrt(I), 30 + l),
}));

/** Ours: LoRADense over each Dense, alpha = r (scaling 1, so the peer's branch needs no scale). */
function oursModel() {
  const layers = frozen.map((f, l) => new LoRADense({
    layer: tfl.layers.dense({ units: I, activation: l === 0 ? 'relu' : 'linear', ...(l === 0 ? { inputShape: [I] } : {}) }), rank: r, seed: l,
  }));
  const model = tfl.sequential({ layers });
  layers.forEach((layer, l) => {
    layer.dense.setWeights([tf.tensor(frozen[l].kernel, [I, I]), tf.tensor(frozen[l].bias, [I])]);
    layer.loraA.write(tf.tensor(frozen[l].A, [I, r]));
  });
  return model;
}

/** tfjs's own: activation(Dense_frozen(x) + B(A(x))), the branch two bias-free Dense layers. */
function peerModel() {
  const input = tfl.input({ shape: [I] });
  let h = input;
  frozen.forEach((f, l) => {
    const base = tfl.layers.dense({ units: I, trainable: false });
    const down = tfl.layers.dense({ units: r, useBias: false });
    const up = tfl.layers.dense({ units: I, useBias: false, kernelInitializer: 'zeros' });
    const sum = tfl.layers.add().apply([base.apply(h), up.apply(down.apply(h))]);
    h = l === 0 ? tfl.layers.activation({ activation: 'relu' }).apply(sum) : sum;
    base.setWeights([tf.tensor(f.kernel, [I, I]), tf.tensor(f.bias, [I])]);
    down.setWeights([tf.tensor(f.A, [I, r])]);
  });
  return tfl.model({ inputs: input, outputs: h });
}

const x = () => tf.tensor(rand(M * I, 1, 1), [M, I]);

/** One training step: forward, mean squared error, backward to the trainable weights, Adam. */
function stepper(model) {
  const opt = tf.train.adam(1e-3);
  const vars = model.trainableWeights.map((w) => w.read());
  const xs = x(), y = tf.tensor(rand(M * I, 1, 2), [M, I]);
  return () => opt.minimize(() => tf.losses.meanSquaredError(y, model.apply(xs, { training: true })), true, vars);
}

/**
 * The layers alone: forward, and backward from a given dy to the trainable weights (no loss, no
 * optimizer), which shows how much of a step is the layers' and how much tfjs's own elementwise
 * work that both models share. engine().gradients is tf.grads' own entry point, taking variables.
 */
function layersOnly(model) {
  const vars = model.trainableWeights.map((w) => w.read());
  const xs = x(), dy = tf.tensor(rand(M * I, 1, 3), [M, I]);
  return () => {
    const { value, grads } = tf.engine().gradients(() => model.apply(xs, { training: true }), vars, dy);
    return [value, ...grads];
  };
}

/** ms per step of each task: warm-up, then alternating rounds (order rotated), each sample >= ~50 ms of steps. */
function time(tasks) {
  const samples = Object.fromEntries(Object.keys(tasks).map((k) => [k, []]));
  const reps = {};
  for (const [k, step] of Object.entries(tasks)) {
    tf.dispose(step());
    const t0 = performance.now();
    tf.dispose(step());
    reps[k] = Math.max(1, Math.ceil(50 / (performance.now() - t0)));
  }
  const names = Object.keys(tasks);
  for (let i = 0; i < rounds; i++) {
    for (const k of [...names.slice(i % names.length), ...names.slice(0, i % names.length)]) {
      const t0 = performance.now();
      for (let j = 0; j < reps[k]; j++) tf.dispose(tasks[k]());
      samples[k].push((performance.now() - t0) / reps[k]);
    }
  }
  return samples;
}

/** The backend's own matMul at the layer's size, plain (NN) and as every backward uses it (dy·Wᵀ, NT), in GFLOP/s. */
function matMulRates() {
  const a = tf.tensor(rand(M * I, 1, 4), [M, I]), w = tf.tensor(rand(I * I, 1, 5), [I, I]);
  const rate = (transposeB) => {
    tf.dispose(tf.matMul(a, w, false, transposeB));
    const t0 = performance.now();
    tf.dispose(tf.matMul(a, w, false, transposeB));
    return round3((2 * M * I * I) / (performance.now() - t0) / 1e6);
  };
  const out = { NN: rate(false), NT: rate(true) };
  tf.dispose([a, w]);
  return out;
}

const stats = (xs) => ({ ms: round3(median(xs)), spread: round3((quantile(xs, 0.75) - quantile(xs, 0.25)) / median(xs)), samples: xs.map(round3) });

const loadStart = os.loadavg();
const threadsAttempt = wasmThreadsAttempt();
const rows = [];
for (const backend of ['wasm', 'cpu']) {
  if (!(await tf.setBackend(backend))) throw new Error(`tfjs backend ${backend} did not initialise`);
  await tf.ready();
  const models = { ours: oursModel(), peer: peerModel() };
  const ours = stepper(models.ours), peer = stepper(models.peer);
  // The same model: the first step's losses agree.
  const [lo, lp] = [ours(), peer()].map((t) => { const v = t.dataSync()[0]; t.dispose(); return v; });
  const s = time({ ours, peer, oursLayers: layersOnly(models.ours), peerLayers: layersOnly(models.peer) });
  const row = {
    backend, ours: stats(s.ours), peer: stats(s.peer), layers: { ours: stats(s.oursLayers), peer: stats(s.peerLayers) }, matMulGflops: matMulRates(),
    firstLoss: { ours: lo, peer: lp, relDiff: Math.abs(lo - lp) / Math.abs(lp) }, load1: round3(os.loadavg()[0]),
  };
  row.ratio = round3(row.peer.ms / row.ours.ms);
  row.layers.ratio = round3(row.layers.peer.ms / row.layers.ours.ms);
  rows.push(row);
  const ms = (v) => v.toFixed(1).padStart(8);
  console.log(`${backend.padEnd(4)} step    ours ${ms(row.ours.ms)} ms   tfjs ${ms(row.peer.ms)} ms   tfjs / ours ${row.ratio.toFixed(1).padStart(6)}x   (first loss ${lo.toFixed(5)} vs ${lp.toFixed(5)}, load ${row.load1})`);
  console.log(`${backend.padEnd(4)} layers  ours ${ms(row.layers.ours.ms)} ms   tfjs ${ms(row.layers.peer.ms)} ms   tfjs / ours ${row.layers.ratio.toFixed(1).padStart(6)}x   (forward + backward from dy, no loss or optimizer)`);
  console.log(`${backend.padEnd(4)} tfjs's own matMul (${M}, ${I}) x (${I}, ${I}): ${row.matMulGflops.NN} GFLOP/s, transposed (dy·Wᵀ) ${row.matMulGflops.NT} GFLOP/s`);
}
const loadEnd = os.loadavg();

const info = backendInfo();
const ratio = (b) => rows.find((x) => x.backend === b).ratio;
const result = {
  date: new Date().toISOString(), machine: machine(), commit: commit(), command: `node bench/tfjs-step.mjs ${process.argv.slice(2).join(' ')}`.trim(),
  loadavg: { start: loadStart.map(round3), end: loadEnd.map(round3) },
  shape: { M, I, O: I, r, layers: LAYERS, alpha: r, optimizer: 'adam(1e-3)', loss: 'meanSquaredError' },
  ours: { package: 'fused-lora/tfjs (LoRADense)', blas: info.cpu.blas, threads: info.cpu.threads, reason: info.cpu.reason },
  peers: {
    tfjs: { core: tf.version_core, layers: tfl.version_layers, wasm: tfWasm.version_wasm },
    cpu: { config: 'tfjs-backend-cpu: plain JavaScript, one thread; it has no settings' },
    wasm: {
      config: `tfjs-backend-wasm: SIMD ${tf.env().getBool('WASM_HAS_SIMD_SUPPORT')}, ${tfWasm.getThreadsCount()} thread(s)`,
      simd: tf.env().getBool('WASM_HAS_SIMD_SUPPORT'), threads: tfWasm.getThreadsCount(),
      threadsForced: threadsAttempt,
      note: 'tfjs-backend-wasm turns threads off in Node; forcing WASM_HAS_MULTITHREAD_SUPPORT (threadsForced) is what a user would try',
    },
  },
  method: `per backend: both models from the same weights, one warm-up call of each task, then ${rounds} alternating rounds (order rotated) of >= ~50 ms of calls each; medians; spread = (p75 - p25) / median; ratio = tfjs ms / ours ms. step: forward, loss, backward, Adam; layers: forward and backward from a given dy only; matMulGflops: the backend's own tf.matMul at the layer's size, one timed call after one warm-up`,
  rows,
  targets: [
    { target: 'tfjs wasm step / our step', limit: '>= 5', measured: ratio('wasm'), met: ratio('wasm') >= 5 },
    { target: 'tfjs cpu step / our step', limit: '>= 100', measured: ratio('cpu'), met: ratio('cpu') >= 100 },
  ],
};
fs.mkdirSync(values.out, { recursive: true });
const file = path.join(values.out, `${result.date.slice(0, 10)}-${os.hostname()}-tfjs.json`);
fs.writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
console.log(`wasm: ${result.peers.wasm.config}; forced threads: ${JSON.stringify(threadsAttempt)}`);
console.log(`load ${loadStart.map((v) => v.toFixed(2)).join(' ')} -> ${loadEnd.map((v) => v.toFixed(2)).join(' ')} (a shared machine: ratios this large survive it; the absolute ms do not)`);
for (const t of result.targets) console.log(`${t.met ? 'met    ' : 'NOT MET'} ${t.target}: ${t.measured} (${t.limit})`);
console.log(`wrote ${path.relative(process.cwd(), file)}`);
