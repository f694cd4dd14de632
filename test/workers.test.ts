// fused-lora/workers against a real Redis (Debian's redis-server on 127.0.0.1, a free port, no
// persistence unless a case needs it) with real worker processes (`fused-lora worker`). Every
// adapter a worker writes is compared with what `fused-lora train` (runTrain) writes for the same
// job and seed alone.
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LoraError, readSafetensors, writeSafetensors } from '../lib/index';
import { runTrain } from '../lib/cli/train';
import { createTrainingWorker, enqueueTraining, TrainingJob, TrainingResult } from '../lib/workers';
import { randomArray } from './reference';

const HAVE_REDIS = spawnSync('redis-server', ['--version']).status === 0;
if (!HAVE_REDIS) console.warn('test/workers.test.ts: redis-server is not installed (apt-get install redis-server): the training-worker tests are skipped');

const cli = path.join(__dirname, '..', 'dist', 'cli', 'index.js');
const procs: ChildProcess[] = [];
// Every process's output so far, for the message of a wait that times out (what the workers and
// Redis said is the first thing needed to tell a hang from a slow machine).
const outputs: Array<{ what: string; out: () => string }> = [];

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/** A child process with its output so far, and a promise of its exit code. */
function launch(cmd: string, args: string[], ready: RegExp) {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(proc);
  let out = '';
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  const up = new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer) => {
      out += d.toString();
      if (ready.test(out)) resolve();
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    exited.then((code) => reject(new Error(`${cmd} exited (${code}) before it was ready:\n${out}`)));
  });
  outputs.push({ what: `${path.basename(cmd)} ${args.slice(0, 2).join(' ')} (pid ${proc.pid})`, out: () => out });
  return { proc, up, exited, out: () => out };
}

async function startRedis(port: number, extra: string[] = []) {
  const r = launch('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...extra], /Ready to accept connections/);
  await r.up;
  return r;
}

async function startWorker(port: number, queue: string, extra: string[] = []) {
  const w = launch(process.execPath, [cli, 'worker', '--redis', `redis://127.0.0.1:${port}`, '--queue', queue, ...extra], /worker \d+ on queue/);
  await w.up;
  return w;
}

async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs: number): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > end) {
      const said = outputs.map((o) => `--- ${o.what}, last lines:\n${o.out().split('\n').slice(-15).join('\n')}`).join('\n');
      throw new Error(`timed out waiting for ${what}\n${said}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The job once it has completed (or failed, which fails the test with its reason). */
async function finished(queue: Queue, id: string, timeoutMs = 90_000): Promise<TrainingResult> {
  return until(`job ${id} to finish`, async () => {
    const job = await queue.getJob(id);
    const state = await job?.getState();
    if (state === 'failed') throw new Error(`job ${id} failed: ${(await queue.getJob(id))!.failedReason}`);
    // Read again: the job was read before getState, perhaps before it completed.
    return state === 'completed' ? ((await queue.getJob(id))!.returnvalue as TrainingResult) : undefined;
  }, timeoutMs);
}

async function progressAt(queue: Queue, id: string, step: number): Promise<void> {
  await until(`job ${id} to reach step ${step}`, async () => {
    const p = (await queue.getJob(id))?.progress as { step?: number } | undefined;
    return (p?.step ?? 0) >= step;
  }, 90_000);
}

/** Max |a − b| over every tensor of the two adapters, against the largest |b|. */
async function adapterDiff(dirA: string, dirB: string): Promise<{ diff: number; scale: number }> {
  const a = (await readSafetensors(path.join(dirA, 'adapter_model.safetensors'))).tensors;
  const b = (await readSafetensors(path.join(dirB, 'adapter_model.safetensors'))).tensors;
  expect(Object.keys(a).sort()).toEqual(Object.keys(b).sort());
  let diff = 0, scale = 0;
  for (const k of Object.keys(b)) {
    expect(a[k].shape).toEqual(b[k].shape);
    for (let i = 0; i < b[k].data.length; i++) {
      diff = Math.max(diff, Math.abs(a[k].data[i] - b[k].data[i]));
      scale = Math.max(scale, Math.abs(b[k].data[i]));
    }
  }
  return { diff, scale };
}

/** The job trained alone by `fused-lora train`'s code, into ref; then the worker's adapter must match it. */
async function expectSameAsAlone(job: TrainingJob, ref: string): Promise<void> {
  await runTrain({ ...job, out: ref, progress: false, log: () => {} });
  const { diff, scale } = await adapterDiff(job.out, ref);
  expect(scale).toBeGreaterThan(0);
  expect(diff).toBeLessThanOrEqual(1e-4 * scale);
}

describe.skipIf(!HAVE_REDIS)('training workers over Redis (BullMQ)', () => {
  let dir: string;
  let port: number;
  let url: { host: string; port: number };
  const queues: Queue[] = [];
  const queue = (name: string) => {
    const q = new Queue(name, { connection: url });
    queues.push(q);
    return q;
  };

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fused-lora-workers-'));
    port = await freePort();
    url = { host: '127.0.0.1', port };
    await startRedis(port);
    // Base A: a seeded 2-layer MLP from a weights file, mse; two model files on it (different LoRA and optimizer).
    const I = 12, H = 24, O = 6;
    await writeSafetensors(path.join(dir, 'A.safetensors'), {
      'fc1.weight': { data: randomArray(H * I, 1, 0.3), shape: [H, I] }, 'fc1.bias': { data: randomArray(H, 2, 0.1), shape: [H] },
      'fc2.weight': { data: randomArray(O * H, 3, 0.2), shape: [O, H] },
    });
    const layersA = [{ name: 'fc1', type: 'linear', in: I, out: H }, { name: 'act', type: 'gelu' }, { name: 'fc2', type: 'linear', in: H, out: O }];
    fs.writeFileSync(path.join(dir, 'A1.json'), JSON.stringify({ layers: layersA, weights: 'A.safetensors', lora: { rank: 2, alpha: 4 }, optimizer: { type: 'adamw', lr: 0.01 }, steps: 25, batchSize: 16, seed: 1 }));
    fs.writeFileSync(path.join(dir, 'A2.json'), JSON.stringify({
      layers: layersA, weights: 'A.safetensors', lora: { rank: 3, dropout: 0.1, rslora: true }, optimizer: { type: 'sgd', lr: 0.05, momentum: 0.9 }, steps: 25, batchSize: 16, seed: 1, clipGradNorm: 0.5,
    }));
    const xA = randomArray(80 * I, 4), wT = randomArray(O * I, 5, 0.3);
    fs.writeFileSync(path.join(dir, 'A.jsonl'), Array.from({ length: 80 }, (_, n) => {
      const x = Array.from(xA.subarray(n * I, (n + 1) * I));
      return JSON.stringify({ x, y: Array.from({ length: O }, (_, o) => x.reduce((a, v, i) => a + v * wT[o * I + i], 0)) });
    }).join('\n'));
    // Base B: one Linear with no weights file (seeded from the model file's seed), cross-entropy on labels.
    const IB = 10, C = 5;
    for (const [name, lora] of [['B1', { rank: 2 }], ['B2', { rank: 4, alpha: 2, dropout: 0.05 }]] as const) {
      fs.writeFileSync(path.join(dir, `${name}.json`), JSON.stringify({ layers: [{ name: 'head', type: 'linear', in: IB, out: C }], lora, loss: 'cross_entropy', steps: 30, batchSize: 12, seed: 7 }));
    }
    const xB = randomArray(60 * IB, 6);
    await writeSafetensors(path.join(dir, 'B.safetensors'), {
      x: { data: xB, shape: [60, IB] }, labels: { data: Float32Array.from({ length: 60 }, (_, n) => (xB[n * IB] > 0 ? 1 : 0) + (xB[n * IB + 1] > 0 ? 2 : 0)), shape: [60] },
    });
    // Base C, for the faults: wide enough that a job lasts a few seconds, so it can be interrupted.
    const IC = 384;
    fs.writeFileSync(path.join(dir, 'C.json'), JSON.stringify({
      layers: [{ name: 'up', type: 'linear', in: IC, out: IC }, { name: 'act', type: 'relu' }, { name: 'down', type: 'linear', in: IC, out: 8 }],
      lora: { rank: 4, dropout: 0.05 }, optimizer: { type: 'adamw', lr: 0.002 }, steps: 1200, batchSize: 32, seed: 2,
    }));
    const xC = randomArray(128 * IC, 7);
    await writeSafetensors(path.join(dir, 'C.safetensors'), { x: { data: xC, shape: [128, IC] }, y: { data: randomArray(128 * 8, 8), shape: [128, 8] } });
  }, 90_000);

  afterAll(async () => {
    for (const q of queues) await q.close().catch(() => {});
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const jobC = (name: string, seed: number): TrainingJob => ({ model: path.join(dir, 'C.json'), data: path.join(dir, 'C.safetensors'), out: path.join(dir, name), seed });

  it('3 worker processes train 24 jobs over 2 bases, each once, each adapter equal to the same job trained alone', async () => {
    const q = queue('many');
    const workers = await Promise.all([0, 1, 2].map(() => startWorker(port, 'many', ['--batch-adapters', '4', '--checkpoint-every', '5'])));
    const jobs: TrainingJob[] = Array.from({ length: 24 }, (_, i) => {
      const base = i % 2 === 0 ? 'A' : 'B';
      return {
        model: path.join(dir, `${base}${1 + ((i >> 1) % 2)}.json`), data: path.join(dir, base === 'A' ? 'A.jsonl' : 'B.safetensors'),
        out: path.join(dir, 'many', `job${i}`), seed: 100 + i, ...(i % 3 === 0 && { steps: 18 }), ...(i % 4 === 1 && { batchSize: 7 }),
      };
    });
    const added = await Promise.all(jobs.map((j) => enqueueTraining(q, j)));
    const results = await Promise.all(added.map((j) => finished(q, j.id!, 180_000)));

    // Each job completed once: one "done" line for it over all the workers' logs.
    const logs = workers.map((w) => w.out()).join('\n');
    for (const j of added) expect(logs.match(new RegExp(`^job-${j.id}: done`, 'gm'))?.length).toBe(1);
    // Jobs did share batches (each worker held up to 4 at once, on 2 bases).
    expect(Math.max(...results.map((r) => r.batchedWith))).toBeGreaterThan(1);
    for (const [i, r] of results.entries()) {
      expect(r).toMatchObject({ adapter: jobs[i].out, steps: jobs[i].steps ?? (i % 2 === 0 ? 25 : 30), resumedFrom: 0 });
      expect(fs.existsSync(path.join(jobs[i].out, 'checkpoint'))).toBe(false);
      await expectSameAsAlone(jobs[i], path.join(dir, 'many-ref', `job${i}`));
    }
    for (const w of workers) w.proc.kill('SIGTERM');
    expect(await Promise.all(workers.map((w) => w.exited))).toEqual([0, 0, 0]);
  }, 240_000);

  it('a worker killed with SIGKILL mid-job: another takes the job over from its checkpoint, and the adapter is the same', async () => {
    const q = queue('kill');
    const fast = ['--checkpoint-every', '100', '--lock-duration', '1500', '--stalled-interval', '500'];
    const first = await startWorker(port, 'kill', fast);
    const job = jobC('killed', 11);
    const { id } = await enqueueTraining(q, job);
    await progressAt(q, id!, 350);
    first.proc.kill('SIGKILL');
    await first.exited;
    const second = await startWorker(port, 'kill', fast);
    const r = await finished(q, id!);
    // It went on from a checkpoint at step 300 or later (the kill came after step 350), not from 0.
    expect(r.resumedFrom).toBeGreaterThanOrEqual(300);
    expect(r.resumedFrom % 100).toBe(0);
    expect(r.steps).toBe(1200);
    expect(second.out()).toMatch(new RegExp(`job-${id}: resumed from its checkpoint at step ${r.resumedFrom}`));
    await expectSameAsAlone(job, path.join(dir, 'killed-ref'));
    second.proc.kill('SIGTERM');
    expect(await second.exited).toBe(0);
  }, 180_000);

  it('SIGTERM finishes the step, checkpoints, hands the job back to wait and exits; the next worker resumes at that step', async () => {
    const q = queue('term');
    const first = await startWorker(port, 'term', ['--checkpoint-every', '1000']);
    const job = jobC('termed', 12);
    const { id } = await enqueueTraining(q, job);
    await progressAt(q, id!, 300);
    first.proc.kill('SIGTERM');
    expect(await first.exited).toBe(0);
    const step = Number(/handed back at step (\d+)/.exec(first.out())![1]);
    expect(step).toBeGreaterThanOrEqual(300);
    expect(await (await q.getJob(id!))!.getState()).toBe('waiting');
    expect(JSON.parse(fs.readFileSync(path.join(job.out, 'checkpoint', 'checkpoint.json'), 'utf8')).step).toBe(step);
    const second = await startWorker(port, 'term');
    const r = await finished(q, id!);
    expect(r.resumedFrom).toBe(step);
    await expectSameAsAlone(job, path.join(dir, 'termed-ref'));
    second.proc.kill('SIGTERM');
    expect(await second.exited).toBe(0);
  }, 180_000);

  it('a Redis restart mid-job: the worker reconnects, the job completes with the same adapter, and new jobs are taken', async () => {
    const p2 = await freePort();
    const aof = fs.mkdtempSync(path.join(dir, 'aof-'));
    // Persistence here, so the restart keeps the queue, as a production Redis does.
    const persist = ['--appendonly', 'yes', '--appendfsync', 'always', '--dir', aof];
    let redis = await startRedis(p2, persist);
    const q = new Queue('restart', { connection: { host: '127.0.0.1', port: p2, maxRetriesPerRequest: null } });
    queues.push(q);
    const w = await startWorker(p2, 'restart', ['--checkpoint-every', '200']);
    const job = jobC('restarted', 13);
    const { id } = await enqueueTraining(q, job);
    await progressAt(q, id!, 300);
    redis.proc.kill('SIGTERM');
    await redis.exited;
    await new Promise((r) => setTimeout(r, 700));
    redis = await startRedis(p2, persist);
    const r = await finished(q, id!);
    expect(r.steps).toBe(1200);
    await expectSameAsAlone(job, path.join(dir, 'restarted-ref'));
    const after = await enqueueTraining(q, { model: path.join(dir, 'B1.json'), data: path.join(dir, 'B.safetensors'), out: path.join(dir, 'after-restart') });
    expect((await finished(q, after.id!)).steps).toBe(30);
    w.proc.kill('SIGTERM');
    expect(await w.exited).toBe(0);
    await q.close();
    redis.proc.kill('SIGTERM');
    await redis.exited;
  }, 180_000);

  it('a malformed job fails alone with a message naming what is wrong; the worker goes on', async () => {
    const q = queue('bad');
    const w = await startWorker(port, 'bad');
    const good: TrainingJob = { model: path.join(dir, 'B1.json'), data: path.join(dir, 'B.safetensors'), out: path.join(dir, 'good') };
    const bad: Array<[unknown, RegExp]> = [
      [{ ...good, stepz: 5 }, /ERR_ARGUMENT: worker: expected job keys among .* for job\.stepz but received an unknown key \(did you mean 'steps'\?\)/],
      [{ ...good, data: path.join(dir, 'missing.jsonl') }, /ERR_IO: data: .*missing\.jsonl: cannot be read: ENOENT/],
      [{ ...good, data: path.join(dir, 'A.jsonl') }, /ERR_SHAPE: worker: expected 10 features \(layer head\) for data x but received 12/],
      [{ ...good, steps: -1 }, /ERR_ARGUMENT: worker: expected a positive integer for job\.steps but received number -1/],
      [{ ...good, quantize: 'int4' }, /ERR_ARGUMENT: worker: expected 'int8' or 'nf4' for job\.quantize but received string "int4"/],
      ['not a job', /ERR_ARGUMENT: worker: expected a training job object/],
    ];
    // Added as any client could, past enqueueTraining's checks.
    const badJobs = await Promise.all(bad.map(([data]) => q.add('train', data)));
    const goodJob = await enqueueTraining(q, good);
    for (const [i, j] of badJobs.entries()) {
      const reason = await until(`job ${j.id} to fail`, async () => {
        const job = await q.getJob(j.id!);
        return (await job?.getState()) === 'failed' ? (await q.getJob(j.id!))!.failedReason : undefined;
      }, 60_000);
      expect(reason).toMatch(bad[i][1]);
    }
    expect((await finished(q, goodJob.id!)).steps).toBe(30);
    expect(w.proc.exitCode).toBe(null);
    // `fused-lora submit --wait`: the adapter's path and the final loss, or the job's failure and exit code 1.
    const submit = (j: TrainingJob, ...more: string[]) => new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const p = spawn(process.execPath, [cli, 'submit', '--redis', `redis://127.0.0.1:${port}`, '--queue', 'bad', '--model', j.model, '--data', j.data, '--out', j.out, '--seed', '5', '--wait', '--no-progress', ...more]);
      let stdout = '', stderr = '';
      p.stdout.on('data', (d) => (stdout += d));
      p.stderr.on('data', (d) => (stderr += d));
      p.on('exit', (code) => resolve({ code, stdout, stderr }));
    });
    const viaCli = { ...good, out: path.join(dir, 'good-cli') };
    const ok = await submit(viaCli);
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    const alone = await runTrain({ ...viaCli, seed: 5, out: path.join(dir, 'good-cli-alone'), progress: false, log: () => {} });
    expect(ok.stdout).toMatch(new RegExp(`^submitted job \\d+ to queue bad\n`));
    // B1 draws its base from its seed: written beside the adapter, the file train writes.
    const drawn = path.join(viaCli.out, 'base.safetensors');
    expect(ok.stdout).toContain(`trained 30 steps: loss ${alone.firstLoss.toExponential(3)} -> ${alone.lastLoss.toExponential(3)}; adapter written to ${viaCli.out}, with the base it drew as ${drawn}\n`);
    expect(fs.readFileSync(drawn).equals(fs.readFileSync(alone.base))).toBe(true);
    // --dtype and --quantize as train takes them: the same losses as train with the same flags.
    const lowp = { ...good, out: path.join(dir, 'lowp-cli') };
    const okLowp = await submit(lowp, '--dtype', 'bfloat16', '--quantize', 'int8');
    expect(okLowp.stderr).toBe('');
    const aloneLowp = await runTrain({ ...lowp, seed: 5, dtype: 'bfloat16', quantize: 'int8', out: path.join(dir, 'lowp-cli-alone'), progress: false, log: () => {} });
    expect(okLowp.stdout).toContain(`trained 30 steps: loss ${aloneLowp.firstLoss.toExponential(3)} -> ${aloneLowp.lastLoss.toExponential(3)}; adapter written to ${lowp.out}, with the base it drew as ${path.join(lowp.out, 'base.safetensors')}\n`);
    expect(aloneLowp.lastLoss).not.toBe(alone.lastLoss);  // the flags reached the worker
    const no = await submit({ ...good, data: path.join(dir, 'A.jsonl'), out: path.join(dir, 'bad-cli') });
    expect(no.code).toBe(1);
    expect(no.stderr).toMatch(/^fused-lora: ERR_SHAPE: submit: job \d+ failed: worker: expected 10 features/);
    // The client refuses such jobs before they reach the queue; the worker refuses unknown options.
    for (const [j, text] of [[{ ...good, lr: 0 }, /for job\.lr but received number 0/], [{ ...good, seeed: 1 }, /job\.seeed .*did you mean 'seed'/]] as const) {
      const err = await enqueueTraining(q, j as TrainingJob).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(LoraError);
      expect((err as LoraError).code).toBe('ERR_ARGUMENT');
      expect((err as LoraError).message).toMatch(text);
    }
    expect(() => createTrainingWorker({ connection: url, queue: 'bad', batchAdaptors: 2 } as never)).toThrow(/options\.batchAdaptors .*did you mean 'batchAdapters'/);
    w.proc.kill('SIGTERM');
    expect(await w.exited).toBe(0);
  }, 180_000);
});
