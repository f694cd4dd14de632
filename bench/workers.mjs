// Training jobs per minute through fused-lora/workers: 16 jobs on one base (one Linear, I = O = 1024,
// r = 8), each its own adapter, seed and optimizer, with 1 and 2 worker processes (`fused-lora
// worker`), batching on (every job a worker holds in one mixed-adapter batch) against off (one job at
// a time: --batch-adapters 1 --concurrency 1). One redis-server on a free port; the configurations
// alternate within each round, so load drifts hit them alike. A configuration's time runs from the
// first job added to the last one completed (workers already up; each job's data load, training and
// adapter write inside it). Each configuration runs at two thread settings (FUSED_LORA_NUM_THREADS per
// process, below), the best counted.
//
// Usage: npm run build:ts && node bench/workers.mjs [--jobs 16] [--steps 200] [--batch 16] [--rounds 2] [--out bench/results]
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Queue } from 'bullmq';
import { writeSafetensors } from '../dist/index.js';
import { commit, machine } from './dist/bench.js';
import { Random } from '../dist/random.js';
import { median } from '../dist/stats.js';
import { enqueueTraining } from '../dist/workers/index.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({
  options: {
    jobs: { type: 'string', default: '16' }, steps: { type: 'string', default: '200' }, batch: { type: 'string', default: '16' },
    size: { type: 'string', default: '1024' }, rank: { type: 'string', default: '8' }, rounds: { type: 'string', default: '2' },
    out: { type: 'string', default: path.join(root, 'bench', 'results') },
  },
});
const JOBS = Number(values.jobs), STEPS = Number(values.steps), BATCH = Number(values.batch), I = Number(values.size), r = Number(values.rank), ROUNDS = Number(values.rounds);
const cli = path.join(root, 'dist', 'cli', 'index.js');
const cores = os.cpus().length;
const loadStart = os.loadavg();

const rand = (n, seed, scale = 1) => new Random(seed).fillUniform(new Float32Array(n), scale);  // U(-scale, scale)

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function launch(cmd, args, ready, env = {}) {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  children.add(proc);
  proc.on('exit', () => children.delete(proc));
  let out = '';
  return new Promise((resolve, reject) => {
    const on = (d) => {
      out += d;
      if (ready.test(out)) resolve(proc);
    };
    proc.stdout.on('data', on);
    proc.stderr.on('data', on);
    proc.on('exit', (code) => reject(new Error(`${cmd} exited (${code}):\n${out}`)));
  });
}

const children = new Set();
process.on('exit', () => { for (const c of children) c.kill('SIGKILL'); });
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fused-lora-bench-workers-'));
const N = 256;
await writeSafetensors(path.join(dir, 'base.safetensors'), { 'fc.weight': { data: rand(I * I, 1, 1 / Math.sqrt(I)), shape: [I, I] } });
await writeSafetensors(path.join(dir, 'data.safetensors'), { x: { data: rand(N * I, 2), shape: [N, I] }, y: { data: rand(N * I, 3), shape: [N, I] } });
const spec = { layers: [{ name: 'fc', type: 'linear', in: I, out: I, bias: false }], weights: 'base.safetensors', lora: { rank: r, alpha: 2 * r }, optimizer: { type: 'adamw', lr: 1e-3 }, steps: STEPS, batchSize: BATCH, seed: 1 };
fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify(spec));

const port = await freePort();
const redis = await launch('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], /Ready to accept connections/);
const connection = { host: '127.0.0.1', port };

// Each (workers, batching) at two thread settings per process, the best counted: 1 worker with all
// cores or 1; 2 workers with half the cores each or all of them each (oversubscribed).
const half = Math.max(1, Math.floor(cores / 2));
const configs = [false, true].flatMap((batching) => [
  { workers: 1, batching, threads: cores }, { workers: 1, batching, threads: 1 },
  { workers: 2, batching, threads: half }, { workers: 2, batching, threads: cores },
]).map((c) => ({ name: `${c.workers} worker${c.workers > 1 ? 's' : ''}, ${c.batching ? 'batching' : 'one job at a time'}, ${c.threads} thread${c.threads > 1 ? 's' : ''} each`, ...c }));
const samples = Object.fromEntries(configs.map((c) => [c.name, []]));

let run = 0;
async function timeConfig(c) {
  const queueName = `bench-${run++}`;
  const K = c.batching ? Math.ceil(JOBS / c.workers) : 1;
  const workers = await Promise.all(Array.from({ length: c.workers }, () =>
    launch(process.execPath, [cli, 'worker', '--redis', `redis://127.0.0.1:${port}`, '--queue', queueName, '--batch-adapters', String(K), '--concurrency', String(K), '--checkpoint-every', String(10 * STEPS)],
      /worker \d+ on queue/, { FUSED_LORA_NUM_THREADS: String(c.threads) })));
  const queue = new Queue(queueName, { connection });
  const t0 = performance.now();
  const jobs = [];
  for (let j = 0; j < JOBS; j++) jobs.push(await enqueueTraining(queue, { model: path.join(dir, 'model.json'), data: path.join(dir, 'data.safetensors'), out: path.join(dir, queueName, `job${j}`), seed: 10 + j }));
  const batched = [];
  for (;;) {
    const states = await Promise.all(jobs.map((j) => queue.getJob(j.id).then(async (job) => ({ state: await job.getState(), job }))));
    const failed = states.find((s) => s.state === 'failed');
    if (failed) throw new Error(`job failed: ${failed.job.failedReason}`);
    if (states.every((s) => s.state === 'completed')) {
      // Fetched again: a job read before it completed has no return value.
      for (const j of jobs) batched.push((await queue.getJob(j.id)).returnvalue.batchedWith);
      break;
    }
    await new Promise((res) => setTimeout(res, 20));
  }
  const seconds = (performance.now() - t0) / 1000;
  await queue.obliterate({ force: true });
  await queue.close();
  await Promise.all(workers.map((w) => new Promise((res) => {
    w.removeAllListeners('exit');
    w.on('exit', res);
    w.kill('SIGTERM');
  })));
  return { seconds, jobsPerMinute: (JOBS * 60) / seconds, maxBatchedWith: Math.max(...batched) };
}

for (let round = 0; round < ROUNDS; round++) {
  const order = configs.map((_, i) => configs[(i + round) % configs.length]);
  for (const c of order) {
    const s = await timeConfig(c);
    samples[c.name].push(s);
    console.log(`round ${round + 1}: ${c.name.padEnd(48)} ${s.seconds.toFixed(2).padStart(7)} s  ${s.jobsPerMinute.toFixed(1).padStart(7)} jobs/min  (batched up to ${s.maxBatchedWith})`);
  }
}
redis.kill('SIGTERM');

const jpm = Object.fromEntries(configs.map((c) => [c.name, median(samples[c.name].map((s) => s.jobsPerMinute))]));
const best = (batching, workers) => Math.max(...configs.filter((c) => c.batching === batching && c.workers === workers).map((c) => jpm[c.name]));
const summary = {
  '1 worker': { off: best(false, 1), on: best(true, 1), speedup: best(true, 1) / best(false, 1) },
  '2 workers': { off: best(false, 2), on: best(true, 2), speedup: best(true, 2) / best(false, 2) },
};
for (const [k, v] of Object.entries(summary)) console.log(`${k}: ${v.off.toFixed(1)} jobs/min one at a time, ${v.on.toFixed(1)} batching: ${v.speedup.toFixed(2)}x`);

const result = {
  date: new Date().toISOString(), machine: machine(), commit: commit(), command: `node bench/workers.mjs ${process.argv.slice(2).join(' ')}`.trim(),
  loadavg: { start: loadStart, end: os.loadavg() },
  redis: 'redis-server (Debian), 127.0.0.1, no persistence',
  shape: { jobs: JOBS, I, O: I, r, steps: STEPS, batchSize: BATCH, layers: 1, optimizer: 'adamw' },
  method: 'workers started first; time from the first job added to the last completed; configurations alternate per round (order rotated); medians over rounds; per worker count the best thread setting',
  configs: configs.map((c) => ({ ...c, batchAdapters: c.batching ? Math.ceil(JOBS / c.workers) : 1, samples: samples[c.name], medianJobsPerMinute: jpm[c.name] })),
  summary,
};
fs.mkdirSync(values.out, { recursive: true });
const file = path.join(values.out, `${result.date.slice(0, 10)}-${os.hostname()}-workers.json`);
fs.writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
console.log(`wrote ${file}`);
fs.rmSync(dir, { recursive: true, force: true });
process.exit(0);
