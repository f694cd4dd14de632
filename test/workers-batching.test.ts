// The batching of fused-lora/workers without Redis: a worker's scheduler given prepared jobs
// directly. Jobs of one base share a batch within batchAdapters and maxBatchRows, jobs of different
// bases never do, a stopped scheduler hands its jobs back checkpointed, and every adapter equals
// the one `fused-lora train` (runTrain) writes for the same job alone. And the refusals of the API.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LoraError, readSafetensors, writeSafetensors } from '../lib/index';
import { DRAWN_BASE, runTrain } from '../lib/cli/train';
import { HandBack } from '../lib/workers/group';
import { prepareJob, TrainingJob, TrainingResult } from '../lib/workers/job';
import { TrainingScheduler } from '../lib/workers/scheduler';
import { createTrainingWorker, enqueueTraining } from '../lib/workers/index';
import { randomArray } from './reference';

let dir: string;
const hooks = { progress: () => {}, log: () => {} };

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fused-lora-batching-'));
  const I = 10, H = 20, O = 4;
  await writeSafetensors(path.join(dir, 'w.safetensors'), {
    'fc1.weight': { data: randomArray(H * I, 1, 0.3), shape: [H, I] }, 'fc2.weight': { data: randomArray(O * H, 2, 0.3), shape: [O, H] },
  });
  const layers = [{ name: 'fc1', type: 'linear', in: I, out: H, bias: false }, { name: 'act', type: 'relu' }, { name: 'fc2', type: 'linear', in: H, out: O, bias: false }];
  fs.writeFileSync(path.join(dir, 'P.json'), JSON.stringify({ layers, weights: 'w.safetensors', lora: { rank: 2, dropout: 0.1 }, steps: 40, batchSize: 16, seed: 1 }));
  // The same layers from their seeds instead of the file: another base.
  fs.writeFileSync(path.join(dir, 'Q.json'), JSON.stringify({ layers, lora: { rank: 3 }, steps: 40, batchSize: 16, seed: 1 }));
  const x = randomArray(64 * I, 3), y = randomArray(64 * O, 4);
  await writeSafetensors(path.join(dir, 'd.safetensors'), { x: { data: x, shape: [64, I] }, y: { data: y, shape: [64, O] } });
  // For nf4 (blocks of 64 along a target's inputs): 64 inputs, the first layer the only target.
  const wide = [{ name: 'fc1', type: 'linear', in: 64, out: H, bias: true }, { name: 'act', type: 'relu' }, { name: 'fc2', type: 'linear', in: H, out: O, bias: false }];
  fs.writeFileSync(path.join(dir, 'R.json'), JSON.stringify({ layers: wide, lora: { rank: 2, targets: ['fc1'] }, steps: 30, batchSize: 12, seed: 2 }));
  await writeSafetensors(path.join(dir, 'd64.safetensors'), { x: { data: randomArray(48 * 64, 5), shape: [48, 64] }, y: { data: randomArray(48 * O, 6), shape: [48, O] } });
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const job = (model: string, name: string, seed: number): TrainingJob => ({ model: path.join(dir, `${model}.json`), data: path.join(dir, 'd.safetensors'), out: path.join(dir, name), seed });

async function trainAll(s: TrainingScheduler, jobs: TrainingJob[]): Promise<TrainingResult[]> {
  const preps = await Promise.all(jobs.map((j) => prepareJob('worker', j)));
  return Promise.all(preps.map((p, i) => s.train(p, `job-${i}`, hooks)));
}

async function expectSameAsAlone(j: TrainingJob, r?: TrainingResult): Promise<void> {
  // runTrain takes the job's dtype and quantize as train's flags.
  const ref = `${j.out}-alone`;
  const alone = await runTrain({ ...j, out: ref, progress: false, log: () => {} });
  // A base drawn from the model file's seed is written beside the adapter, as train writes it; one
  // from a weights file is that file.
  if (alone.base.startsWith(ref)) {
    const file = path.join(j.out, DRAWN_BASE);
    if (r) expect(r.base).toBe(file);
    expect(fs.readFileSync(file).equals(fs.readFileSync(alone.base)), `${file}: train's file, byte for byte`).toBe(true);
    expect(Object.keys((await readSafetensors(file)).tensors).length).toBeGreaterThan(0);
  } else {
    expect(fs.existsSync(path.join(j.out, DRAWN_BASE))).toBe(false);
    if (r) expect(r.base).toBe(alone.base);
  }
  const a = (await readSafetensors(path.join(j.out, 'adapter_model.safetensors'))).tensors;
  const b = (await readSafetensors(path.join(ref, 'adapter_model.safetensors'))).tensors;
  for (const k of Object.keys(b)) {
    const scale = Math.max(...b[k].data.map(Math.abs));
    expect(scale).toBeGreaterThan(0);
    for (let i = 0; i < b[k].data.length; i++) expect(Math.abs(a[k].data[i] - b[k].data[i])).toBeLessThanOrEqual(1e-4 * scale);
  }
}

describe('a worker\'s batches', () => {
  it('hold the jobs of one base up to batchAdapters; other bases train apart; each adapter is the job trained alone', async () => {
    const jobs = [job('P', 'p0', 11), job('Q', 'q0', 12), job('P', 'p1', 13), job('P', 'p2', 14), job('Q', 'q1', 15)];
    const r = await trainAll(new TrainingScheduler({ batchAdapters: 2, maxBatchRows: Infinity, checkpointEvery: 1000 }), jobs);
    // P: p0 and p1 fill a batch of 2, p2 another; Q: q0 and q1 together.
    expect(r.map((x) => x.batchedWith)).toEqual([2, 2, 2, 1, 2]);
    for (const [i, j] of jobs.entries()) await expectSameAsAlone(j, r[i]);
  });

  it('on bf16 and quantized bases: jobs batch only with jobs of the same dtype and format; each adapter is the job trained alone', async () => {
    const r64 = (name: string, seed: number): TrainingJob => ({ ...job('R', name, seed), data: path.join(dir, 'd64.safetensors'), quantize: 'nf4' });
    const jobs: TrainingJob[] = [
      { ...job('P', 'bf0', 51), dtype: 'bfloat16' }, { ...job('P', 'i8', 52), quantize: 'int8' }, { ...job('P', 'bf1', 53), dtype: 'bfloat16' },
      job('P', 'f0', 54), r64('nf0', 55), { ...r64('nf-bf', 56), dtype: 'bfloat16' }, r64('nf1', 57),
    ];
    const r = await trainAll(new TrainingScheduler({ batchAdapters: 4, maxBatchRows: Infinity, checkpointEvery: 1000 }), jobs);
    expect(r.map((x) => x.batchedWith)).toEqual([2, 1, 2, 1, 2, 1, 2]);
    for (const [i, j] of jobs.entries()) await expectSameAsAlone(j, r[i]);
  });

  it('keep within maxBatchRows: a job that would pass it starts a batch of its own', async () => {
    const jobs = [0, 1, 2, 3].map((i) => job('P', `rows${i}`, 20 + i));
    const wide = await trainAll(new TrainingScheduler({ batchAdapters: 8, maxBatchRows: Infinity, checkpointEvery: 1000 }), jobs);
    expect(wide.map((x) => x.batchedWith)).toEqual([4, 4, 4, 4]);
    const narrow = await trainAll(new TrainingScheduler({ batchAdapters: 8, maxBatchRows: 40, checkpointEvery: 1000 }), jobs);
    expect(narrow.map((x) => x.batchedWith)).toEqual([2, 2, 2, 2]);  // 16 rows each: two fit in 40
    for (const j of jobs) await expectSameAsAlone(j);
  });

  it('stopped, hand every job back checkpointed at its step; a new scheduler resumes each to the same adapter', async () => {
    const jobs = [job('P', 'stop0', 31), job('P', 'stop1', 32), job('Q', 'stop2', 33)];
    const s = new TrainingScheduler({ batchAdapters: 4, maxBatchRows: Infinity, checkpointEvery: 7 });
    const steps: number[] = [];
    const preps = await Promise.all(jobs.map((j) => prepareJob('worker', j)));
    const runs = preps.map((p, i) => s.train(p, `job-${i}`, {
      progress: (step) => {
        steps[i] = step;
        if (i === 0 && step === 17) void s.stop();
      }, log: () => {},
    }).catch((e: unknown) => e));
    const ended = await Promise.all(runs);
    for (const [i, e] of ended.entries()) {
      expect(e).toBeInstanceOf(HandBack);
      expect((e as HandBack).step).toBe(steps[i]);
      expect(JSON.parse(fs.readFileSync(path.join(jobs[i].out, 'checkpoint', 'checkpoint.json'), 'utf8')).step).toBe(steps[i]);
    }
    expect(steps[0]).toBe(17);
    const again = await trainAll(new TrainingScheduler({ batchAdapters: 4, maxBatchRows: Infinity, checkpointEvery: 7 }), jobs);
    expect(again.map((r) => r.resumedFrom)).toEqual(steps);
    for (const j of jobs) await expectSameAsAlone(j);
  });
});

describe('a checkpoint whose files do not agree', () => {
  it('is not used: the job starts over and still ends at the adapter of the job alone', async () => {
    const j = job('P', 'torn', 41);
    const s = new TrainingScheduler({ batchAdapters: 4, maxBatchRows: Infinity, checkpointEvery: 5 });
    const prep = await prepareJob('worker', j);
    const first = await s.train(prep, 'job-0', { progress: (step) => { if (step === 12) void s.stop(); }, log: () => {} }).catch((e: unknown) => e);
    expect((first as HandBack).step).toBe(12);
    // As if killed between the adapter's files and checkpoint.json: the state names an older step.
    const state = path.join(j.out, 'checkpoint', 'checkpoint.json');
    fs.writeFileSync(state, JSON.stringify({ ...JSON.parse(fs.readFileSync(state, 'utf8')), step: 10 }));
    const lines: string[] = [];
    const r = await new TrainingScheduler({ batchAdapters: 4, maxBatchRows: Infinity, checkpointEvery: 5 }).train(await prepareJob('worker', j), 'job-0', { progress: () => {}, log: (l) => lines.push(l) });
    expect(r.resumedFrom).toBe(0);
    expect(lines).toContain('job-0: its checkpoint did not agree with itself; starting over');
    await expectSameAsAlone(j);
  });
});

describe('fused-lora/workers refuses bad arguments before any connection', () => {
  const refusal = async (run: () => unknown) => {
    const e = await (async () => run())().then(() => null, (err: unknown) => err);
    expect(e).toBeInstanceOf(LoraError);
    return `${(e as LoraError).code} ${(e as LoraError).message}`;
  };

  it('names the argument, what was expected and what came', async () => {
    expect(await refusal(() => createTrainingWorker({ connection: null as never, queue: 'q' })))
      .toBe('ERR_ARGUMENT createTrainingWorker: expected Redis connection options ({ host, port }, { url } or an ioredis client) for options.connection but received null');
    expect(await refusal(() => createTrainingWorker({ connection: {}, queue: '' }))).toBe('ERR_ARGUMENT createTrainingWorker: expected a queue name (a non-empty string) for options.queue but received string ""');
    expect(await refusal(() => createTrainingWorker({ connection: {}, queue: 'q', batchAdapters: 0 }))).toMatch(/^ERR_SHAPE createTrainingWorker: expected an integer in \[1, 2\^31 - 1\] for options\.batchAdapters but received number 0$/);
    expect(await refusal(() => createTrainingWorker({ connection: {}, queue: 'q', log: 3 as never }))).toBe('ERR_ARGUMENT createTrainingWorker: expected a function for options.log but received number 3');
    expect(await refusal(() => enqueueTraining({} as never, { model: 'm', data: 'd', out: 'o' }))).toBe('ERR_ARGUMENT enqueueTraining: expected a BullMQ Queue for queue but received object');
    expect(await refusal(() => enqueueTraining({} as never, { model: 'm', data: '', out: 'o' }))).toBe('ERR_ARGUMENT enqueueTraining: expected a non-empty path for job.data but received string ""');
    expect(await refusal(() => enqueueTraining({} as never, { model: 'm', data: 'd', out: 'o', seed: 1.5 }))).toBe('ERR_ARGUMENT enqueueTraining: expected a positive integer for job.seed but received number 1.5');
    expect(await refusal(() => enqueueTraining({} as never, { model: 'm', data: 'd', out: 'o', dtype: 'float16' as never })))
      .toBe("ERR_ARGUMENT enqueueTraining: expected 'float32' or 'bfloat16' for job.dtype but received string \"float16\"");
    expect(await refusal(() => enqueueTraining({} as never, { model: 'm', data: 'd', out: 'o', quantize: 'int4' as never })))
      .toBe("ERR_ARGUMENT enqueueTraining: expected 'int8' or 'nf4' for job.quantize but received string \"int4\"");
    expect(await refusal(() => enqueueTraining({} as never, { model: 'm', data: 'd', out: 'o', dtypes: 'bfloat16' } as never))).toMatch(/^ERR_ARGUMENT enqueueTraining: .*job\.dtypes/);
  });

  it('a job that does not fit its model is refused by prepareJob with the file and shape named', async () => {
    const bad = { ...job('P', 'unused', 1), data: path.join(dir, 'nowhere.jsonl') };
    expect(await refusal(() => prepareJob('worker', bad))).toMatch(/^ERR_IO data: .*nowhere\.jsonl: cannot be read: ENOENT/);
    expect(await refusal(() => prepareJob('worker', { ...bad, model: path.join(dir, 'none.json') }))).toMatch(/^ERR_IO worker: expected a readable JSON model file for --model but received .*none\.json/);
  });
});
