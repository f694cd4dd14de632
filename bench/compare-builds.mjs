// Two builds of this package side by side in one process: a LinearLoRA training step (forward,
// backward with dx, AdamW, zeroGrad; rank 16; an fp32 base, or --base bf16 | int8 | nf4) on each, over small-M shapes, alternating the
// builds every round (order reversed every other round), each sample the mean of ~batch-ms of
// steps; medians. For a kernel or routing change: check the old commit out in a second tree, build
// it there (`npm ci` or a node_modules link, `npx node-gyp rebuild`, `npm run build:ts`) and pass
// both roots. Each build loads its own addon (its own thread pool); the two never run at once.
// Writes bench/results/<date>-<host>-builds.json with the machine, both builds' commits and the command.
// Usage: node bench/compare-builds.mjs <old root> <new root> [--shapes 16x1024,64x4096,...] [--base fp32|bf16|int8|nf4] [--rounds 7] [--batch-ms 150] [--out bench/results]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { commit, machine } from './dist/bench.js';
import { median, quantile } from '../dist/stats.js';

const here = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    shapes: { type: 'string', default: '9x1024,16x1024,64x1024,128x1024,16x4096,64x4096,128x4096,256x4096' },
    base: { type: 'string', default: 'fp32' },
    rounds: { type: 'string', default: '7' }, 'batch-ms': { type: 'string', default: '150' },
    out: { type: 'string', default: path.join(here, 'bench', 'results') },
  },
});
if (positionals.length !== 2) throw new Error('usage: node bench/compare-builds.mjs <old root> <new root> [--shapes MxI,...]');
const shapes = values.shapes.split(',').map((s) => {
  const m = /^(\d+)x(\d+)$/.exec(s.trim());
  if (!m) throw new Error(`--shapes: expected MxI (I = O) items like 16x4096, got ${JSON.stringify(s)}`);
  return { M: Number(m[1]), I: Number(m[2]) };
});
const BASES = { fp32: {}, bf16: { dtype: 'bfloat16' }, int8: { quantize: 'int8' }, nf4: { quantize: 'nf4' } };
if (!Object.hasOwn(BASES, values.base)) throw new Error(`--base: expected one of ${Object.keys(BASES).join(', ')}, got ${JSON.stringify(values.base)}`);
const baseOpts = BASES[values.base], act = values.base === 'bf16' ? { dtype: 'bfloat16' } : {};
const rounds = Number(values.rounds), batchMs = Number(values['batch-ms']);
const r = 16;

const builds = await Promise.all(positionals.map(async (root, i) => {
  const abs = path.resolve(root);
  const lib = await import(path.join(abs, 'dist', 'index.js'));
  const { Random } = await import(path.join(abs, 'dist', 'random.js'));
  return { name: i === 0 ? 'old' : 'new', root: abs, commit: commit(abs), lib, Random, info: lib.backendInfo().cpu };
}));

function stepper(b, M, I) {
  const { Linear, LinearLoRA, AdamW, tensor } = b.lib;
  const rand = (n, scale, seed) => new b.Random(seed).fillUniform(new Float32Array(n), scale);
  const base = new Linear(I, I, { weight: rand(I * I, 1 / Math.sqrt(I), 1), bias: rand(I, 0.1, 2), ...baseOpts });
  const layer = new LinearLoRA(base, r, { alpha: 2 * r, seed: 3 });
  const opt = new AdamW(layer.parameters(), { lr: 1e-4 });
  const x = tensor(rand(M * I, 1, 4), [M, I], act), dy = tensor(rand(M * I, 1, 5), [M, I], act);
  return {
    step: () => { layer.forward(x); layer.backward(dy); opt.step(); opt.zeroGrad(); },
    dispose: () => { layer.dispose(); base.dispose(); },
  };
}

const rows = [];
for (const { M, I } of shapes) {
  const steps = builds.map((b) => stepper(b, M, I));
  const reps = steps.map((s) => {
    s.step();
    const t0 = process.hrtime.bigint();
    s.step();
    return Math.max(1, Math.round(batchMs / Math.max(Number(process.hrtime.bigint() - t0) / 1e6, 1e-3)));
  });
  const samples = [[], []];
  for (let round = 0; round < rounds; round++) {
    for (const i of round % 2 ? [1, 0] : [0, 1]) {
      steps[i].step();
      const t0 = process.hrtime.bigint();
      for (let k = 0; k < reps[i]; k++) steps[i].step();
      samples[i].push(Number(process.hrtime.bigint() - t0) / 1e6 / reps[i]);
    }
  }
  steps.forEach((s) => s.dispose());
  const t = (s) => ({ ms: +median(s).toFixed(4), spread: +((quantile(s, 0.75) - quantile(s, 0.25)) / median(s)).toFixed(3) });
  const row = { base: values.base, M, I, O: I, r, old: t(samples[0]), new: t(samples[1]) };
  row.oldOverNew = +(row.old.ms / row.new.ms).toFixed(3);
  rows.push(row);
  console.log(`${values.base} M=${String(M).padStart(4)} I=O=${String(I).padStart(5)}: old ${row.old.ms.toFixed(3).padStart(8)} ms  new ${row.new.ms.toFixed(3).padStart(8)} ms  old/new ${row.oldOverNew.toFixed(2)}x`);
}
const out = {
  date: new Date().toISOString(), machine: machine(), commit: commit(),
  command: `node bench/compare-builds.mjs ${process.argv.slice(2).join(' ')}`, loadavg: os.loadavg(),
  builds: builds.map((b) => ({ name: b.name, root: b.root, commit: b.commit, blas: b.info.blas, kernel: b.info.builtinKernel ?? b.info.kernel })),
  method: `one process, both builds loaded; per shape ${rounds} rounds alternating the builds (order reversed every other round), each sample the mean of ~${batchMs} ms of steps; medians; spread = IQR / median. A step: forward, backward with dx, AdamW step, zeroGrad; base ${values.base}, rank ${r}, bias`,
  rows,
};
fs.mkdirSync(values.out, { recursive: true });
const file = path.join(values.out, `${out.date.slice(0, 10)}-${out.machine.host}-builds${values.base === 'fp32' ? '' : `-${values.base}`}.json`);
fs.writeFileSync(file, JSON.stringify(out, null, 1) + '\n');
console.log(`wrote ${path.relative(process.cwd(), file)}`);
