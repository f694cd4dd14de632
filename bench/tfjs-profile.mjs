// Where a tfjs training step's time goes, kernel by kernel, on one backend: tf.profile over steps
// of bench/tfjs-step.mjs's two models (the same step: forward, MSE, backward, Adam), each kernel's
// time summed by name, and the rest of the step (engine bookkeeping, tape, layers' glue) as the
// difference between the step's wall time and its kernels'. A reading aid for bench/NOTES.md, not a
// benchmark: the profiler's own bookkeeping adds to every kernel, so the step's ms come from
// tfjs-step.mjs.
//
// Usage: npm run build:ts && node bench/tfjs-profile.mjs [--backend cpu] [--peer] [--layers] [--M 512] [--size 1024] [--rank 16] [--steps 5]
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
import * as tfl from '@tensorflow/tfjs-layers';
import { Random } from '../dist/random.js';
import { LoRADense } from '../dist/tfjs/index.js';

const { values } = parseArgs({
  options: {
    backend: { type: 'string', default: 'cpu' }, M: { type: 'string', default: '512' }, size: { type: 'string', default: '1024' },
    rank: { type: 'string', default: '16' }, steps: { type: 'string', default: '5' }, peer: { type: 'boolean', default: false },
    layers: { type: 'boolean', default: false },
  },
});
const M = Number(values.M), I = Number(values.size), r = Number(values.rank), steps = Number(values.steps);
const rand = (n, scale, seed) => new Random(seed).fillUniform(new Float32Array(n), scale);

if (!(await tf.setBackend(values.backend))) throw new Error(`tfjs backend ${values.backend} did not initialise`);
await tf.ready();

function oursModel() {
  const layers = [0, 1].map((l) => new LoRADense({
    layer: tfl.layers.dense({ units: I, activation: l === 0 ? 'relu' : 'linear', ...(l === 0 ? { inputShape: [I] } : {}) }), rank: r, seed: l,
  }));
  const model = tfl.sequential({ layers });
  layers.forEach((layer, l) => {
    layer.dense.setWeights([tf.tensor(rand(I * I, 1 / Math.sqrt(I), 10 + l), [I, I]), tf.tensor(rand(I, 0.1, 20 + l), [I])]);
    layer.loraA.write(tf.tensor(rand(I * r, 1 / Math.sqrt(I), 30 + l), [I, r]));
  });
  return model;
}

function peerModel() {
  const input = tfl.input({ shape: [I] });
  let h = input;
  for (let l = 0; l < 2; l++) {
    const base = tfl.layers.dense({ units: I, trainable: false });
    const down = tfl.layers.dense({ units: r, useBias: false });
    const up = tfl.layers.dense({ units: I, useBias: false, kernelInitializer: 'zeros' });
    const sum = tfl.layers.add().apply([base.apply(h), up.apply(down.apply(h))]);
    h = l === 0 ? tfl.layers.activation({ activation: 'relu' }).apply(sum) : sum;
  }
  return tfl.model({ inputs: input, outputs: h });
}

const model = values.peer ? peerModel() : oursModel();
const opt = tf.train.adam(1e-3);
const vars = model.trainableWeights.map((w) => w.read());
const xs = tf.tensor(rand(M * I, 1, 1), [M, I]), target = tf.tensor(rand(M * I, 1, 2), [M, I]);
// --layers: the layers alone, forward and backward from a given dy (tfjs-step.mjs's "layers").
const step = values.layers
  ? () => { const { value, grads } = tf.engine().gradients(() => model.apply(xs, { training: true }), vars, target); return [value, ...grads]; }
  : () => opt.minimize(() => tf.losses.meanSquaredError(target, model.apply(xs, { training: true })), true, vars);
tf.dispose(step());
tf.dispose(step());

// Wall time of plain steps first (no profiler), then the same steps profiled.
let t0 = performance.now();
for (let i = 0; i < steps; i++) tf.dispose(step());
const wall = (performance.now() - t0) / steps;
const byName = new Map();
let profiledWall = 0;
for (let i = 0; i < steps; i++) {
  t0 = performance.now();
  const info = await tf.profile(() => { tf.dispose(step()); });
  profiledWall += performance.now() - t0;
  for (const k of info.kernels) {
    const key = `${k.name} ${JSON.stringify(k.inputShapes)}`;
    const e = byName.get(key) ?? { ms: 0, calls: 0 };
    e.ms += await k.kernelTimeMs;
    e.calls += 1;
    byName.set(key, e);
  }
}
const rows = [...byName.entries()].map(([k, e]) => ({ kernel: k, ms: e.ms / steps, calls: e.calls / steps })).sort((a, b) => b.ms - a.ms);
const kernelMs = rows.reduce((a, b) => a + b.ms, 0);
console.log(`${values.backend} ${values.peer ? 'tfjs layers' : 'LoRADense'} ${values.layers ? 'layers alone' : 'step'}: ${wall.toFixed(1)} ms unprofiled, ${(profiledWall / steps).toFixed(1)} ms profiled, of which kernels ${kernelMs.toFixed(1)} ms`);
for (const row of rows) if (row.ms >= 0.05) console.log(`${row.ms.toFixed(2).padStart(9)} ms  x${row.calls}  ${row.kernel}`);
