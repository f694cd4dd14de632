// Concurrency: async calls queued on one layer, cancelled or not, against the same calls made
// synchronously; dispose() while work is pending; the addon in worker_threads (one layer per thread,
// a LoraError class per thread); several layers stepping at once on the libuv pool.
import fc from 'fast-check';
import fs from 'node:fs';
import { getEventListeners } from 'node:events';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import * as lib from '../lib/index';
import { Linear, LinearLoRA, LoraError, Tensor, tensor } from '../lib/index';
import { native } from '../lib/backends/cpu/binding';
import { randomArray } from './reference';

/** Bit-for-bit equality of float32 arrays, fast for large ones (vitest's toEqual walks them slowly). */
const sameBits = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

const seedParam = process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {};
const RUNS = 80;

function twins(I: number, O: number, r: number, dropout: number) {
  const make = () => new LinearLoRA(new Linear(I, O, { seed: 1, bias: true }), r, { seed: 2, dropout, B: randomArray(r * O, 3) });
  return [make(), make()] as const;
}

/** What a call gave: its output's bits, or the code of the LoraError it threw / rejected with. */
type Outcome = { bits: number[] | null } | { code: string };
const bitsOf = (t: Tensor | null): Outcome => ({ bits: t === null ? null : Array.from(new Uint32Array(t.dataSync().buffer)) });
const codeOf = (e: unknown): Outcome => {
  if (!(e instanceof LoraError)) throw e;
  return { code: e.code };
};

type Op = { kind: 'fwd' | 'bwd' | 'fwdAborted' | 'bwdAborted' | 'await' | 'train' | 'eval'; data: number };
const opArb: fc.Arbitrary<Op> = fc.record({
  kind: fc.constantFrom<Op['kind']>('fwd', 'fwd', 'bwd', 'bwd', 'fwdAborted', 'bwdAborted', 'await', 'train', 'eval'),
  data: fc.integer({ min: 0, max: 3 }),
});

describe('async calls on one layer', () => {
  it(`random interleavings of forwardAsync / backwardAsync (some aborted while queued), awaits and train()/eval() equal the sync calls in the same order, bit for bit (fast-check, ${RUNS} runs of up to 14 calls)`, async () => {
    const M = 5, I = 7, O = 6, r = 3;
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 14 }), fc.boolean(), async (ops, withDropout) => {
        const [a, s] = twins(I, O, r, withDropout ? 0.3 : 0);
        const xs = [0, 1, 2, 3].map((k) => randomArray(M * I, 10 + k));
        const dys = [0, 1, 2, 3].map((k) => randomArray(M * O, 20 + k));
        const pending: Array<Promise<Outcome>> = [];
        const expected: Outcome[] = [];
        const cancelled: Array<Promise<unknown>> = [];
        for (const op of ops) {
          switch (op.kind) {
            case 'fwd':
              pending.push(a.forwardAsync(xs[op.data]).then(bitsOf, codeOf));
              try { expected.push(bitsOf(s.forward(xs[op.data]))); } catch (e) { expected.push(codeOf(e)); }
              break;
            case 'bwd':
              pending.push(a.backwardAsync(dys[op.data]).then(bitsOf, codeOf));
              try { expected.push(bitsOf(s.backward(dys[op.data]))); } catch (e) { expected.push(codeOf(e)); }
              break;
            case 'fwdAborted':
            case 'bwdAborted': {
              // Aborted right after the call, before its turn: it must never run (the twin skips it).
              const c = new AbortController();
              const call = op.kind === 'fwdAborted' ? a.forwardAsync(xs[op.data], { signal: c.signal }) : a.backwardAsync(dys[op.data], { signal: c.signal });
              cancelled.push(call.then(() => 'resolved', (e: unknown) => e));
              c.abort(new Error('not needed'));
              break;
            }
            case 'await':
              await Promise.all([...pending, ...cancelled]);
              break;
            case 'train':
            case 'eval':
              a[op.kind]();
              s[op.kind]();
              break;
          }
        }
        expect(await Promise.all(pending)).toEqual(expected);
        for (const c of await Promise.all(cancelled)) expect(c).toMatchObject({ name: 'AbortError', code: 'ERR_ARGUMENT' });
        expect(a.lora.A.grad!.dataSync()).toEqual(s.lora.A.grad!.dataSync());
        expect(a.lora.B.grad!.dataSync()).toEqual(s.lora.B.grad!.dataSync());
      }),
      { numRuns: RUNS, ...seedParam },
    );
  });

  it('an AbortSignal rejects a queued call at once (AbortError, ERR_ARGUMENT, cause = reason); the calls behind it run; a started call is not interrupted', async () => {
    const M = 32, I = 96, O = 64;
    const [a, s] = twins(I, O, 8, 0.1);
    const x = randomArray(M * I, 1), dy = randomArray(M * O, 2);
    const c = new AbortController();
    const order: string[] = [];
    const first = a.forwardAsync(x).then((y) => { order.push('first'); return y; });
    const queued = a.forwardAsync(x, { signal: c.signal }).then(() => order.push('queued resolved'), (e) => { order.push('queued rejected'); return e; });
    const after = a.backwardAsync(dy).then((dx) => { order.push('after'); return dx; });
    const reason = new Error('client went away');
    c.abort(reason);
    const err = await queued;
    expect(err).toBeInstanceOf(LoraError);
    expect(err).toMatchObject({ name: 'AbortError', code: 'ERR_ARGUMENT', cause: reason });
    expect(err.message).toMatch(/LinearLoRA\.forwardAsync: .*abort.*did not run/);
    const [y, dx] = await Promise.all([first, after]);
    expect(order).toEqual(['queued rejected', 'first', 'after']);
    // The aborted forward never ran: the backward used the first forward, and the dropout stream
    // did not advance (the twin never made the aborted call).
    expect(y.dataSync()).toEqual(s.forward(x).dataSync());
    expect(dx!.dataSync()).toEqual(s.backward(dy)!.dataSync());
    // A signal aborted before the call: rejected without queueing. Aborting a started call: no effect.
    await expect(a.forwardAsync(x, { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
    const c2 = new AbortController();
    const running = a.forwardAsync(x, { signal: c2.signal });
    await new Promise((resolve) => setImmediate(resolve));  // its turn has come: the kernel is on the pool
    c2.abort();
    expect((await running).dataSync()).toEqual(s.forward(x).dataSync());
  });

  it('a long-lived signal used for 500 calls keeps no listeners behind (no leak)', async () => {
    const [a] = twins(4, 3, 2, 0);
    const c = new AbortController();
    for (let i = 0; i < 500; i++) {
      await a.forwardAsync(randomArray(8, i), { signal: c.signal });
      if (i % 2) await a.backwardAsync(randomArray(6, i), { signal: c.signal });
    }
    expect(getEventListeners(c.signal, 'abort')).toHaveLength(0);
  });

  it('dispose() while calls are pending: the running call finishes with the right result, the queued ones reject with ERR_DISPOSED at once, nothing crashes', async () => {
    const M = 256, I = 1024, O = 1024;
    const [a, s] = twins(I, O, 16, 0);
    const x = tensor(randomArray(M * I, 4), [M, I]), dy = randomArray(M * O, 5);
    const settled: string[] = [];
    const running = a.forwardAsync(x).then((y) => { settled.push('running'); return y; });
    const queued = [a.backwardAsync(dy), a.forwardAsync(x), a.backwardAsync(dy)].map((p, k) => p.then(() => settled.push(`queued ${k} resolved`), (e) => { settled.push(`queued ${k} rejected`); return e; }));
    await new Promise((resolve) => setImmediate(resolve));  // the first call's kernel is running
    a.dispose();
    const errs = await Promise.all(queued);
    for (const e of errs) expect(e).toMatchObject({ name: 'LoraError', code: 'ERR_DISPOSED' });
    expect(errs[0].message).toMatch(/backwardAsync: .*disposed while this call was queued/);
    const y = await running;
    expect(settled).toEqual(['queued 0 rejected', 'queued 1 rejected', 'queued 2 rejected', 'running']);
    expect(sameBits(y.dataSync(), s.forward(x).dataSync())).toBe(true);
    // The layer is gone; the memory the kernel used is the GC's to free; later calls are refused.
    await expect(a.forwardAsync(x)).rejects.toMatchObject({ code: 'ERR_DISPOSED' });
    expect(() => a.forward(x)).toThrow(expect.objectContaining({ code: 'ERR_DISPOSED' }));
    globalThis.gc?.();
  });

  it('train()/eval() between queued calls applies from the next call on; zeroGrad() while calls are queued is refused (ERR_BACKEND)', async () => {
    const [a, s] = twins(6, 5, 2, 0.5);
    const x = randomArray(12, 1);
    const p = a.forwardAsync(x);  // queued in training mode
    a.eval();
    expect(() => a.zeroGrad()).toThrow(expect.objectContaining({ code: 'ERR_BACKEND' }));
    const q = a.forwardAsync(x);  // eval mode: no dropout
    expect((await p).dataSync()).toEqual(s.forward(x).dataSync());
    s.eval();
    expect((await q).dataSync()).toEqual(s.forward(x).dataSync());
    expect(() => a.zeroGrad()).not.toThrow();
  });
});

// ------------------------------------------------------------------------------------------------
const distBuilt = fs.existsSync(path.join(__dirname, '..', 'dist', 'index.js'));
const workerScript = path.join(__dirname, 'fixtures', 'worker-train.cjs');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { train } = require(workerScript) as { train: (l: typeof lib, o: object) => Promise<{ A: Float32Array; B: Float32Array; losses: number[] }> };

function runWorker(data: object): Promise<{ A: Float32Array; B: Float32Array; losses: number[]; error: { isLoraError: boolean; name: string; code: string }; failed?: string }> {
  return new Promise((resolve, reject) => {
    const w = new Worker(workerScript, { workerData: data });
    let result: unknown;
    w.on('message', (m) => { result = m; });
    w.on('error', reject);
    w.on('exit', (code) => (code === 0 && result ? resolve(result as never) : reject(new Error(`worker exited with ${code}: ${JSON.stringify(result)}`))));
  });
}

describe.skipIf(!distBuilt)('worker_threads (the compiled package, one layer per thread)', () => {
  it('4 workers training at once (sync and async steps) each get the main thread\'s result bit for bit; each sees its own LoraError class; the main thread\'s native errors still work after they exit', async () => {
    const jobs = [0, 1, 2, 3].map((k) => ({ seed: 100 + k, steps: 12, M: 16, I: 48, O: 40, r: 4 }));
    const results = await Promise.all(jobs.map(runWorker));
    for (const [k, res] of results.entries()) {
      expect(res.failed).toBeUndefined();
      const here = await train(lib, jobs[k]);
      expect(res.A).toEqual(here.A);
      expect(res.B).toEqual(here.B);
      expect(res.losses).toEqual(here.losses);
      expect(res.losses[res.losses.length - 1]).toBeLessThan(res.losses[0]);
      // The addon threw the worker's own LoraError (registered per env, not process-wide).
      expect(res.error).toEqual({ isLoraError: true, name: 'LoraError', code: 'ERR_SHAPE' });
    }
    // Before the per-env fix, the last worker's class stayed registered process-wide: a native error
    // on the main thread after the workers exited used a dead isolate's reference and crashed.
    let thrown: unknown;
    try {
      native.loraForward({ M: -1 } as never);
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(LoraError);
    expect(thrown).toMatchObject({ code: 'ERR_SHAPE' });
  });

  it('workers started and stopped in a loop (12 lifetimes) leave the addon usable', async () => {
    for (let k = 0; k < 12; k++) {
      const res = await runWorker({ seed: k, steps: 1, M: 2, I: 8, O: 8, r: 2 });
      expect(res.error.isLoraError).toBe(true);
    }
    expect(() => native.gemm({ M: -1 } as never)).toThrow(LoraError);
  });
});

// ------------------------------------------------------------------------------------------------
const threadCount = (): number | null => {
  try {
    return Number(/Threads:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))![1]);
  } catch {
    return null;
  }
};

describe('several layers on the libuv pool', () => {
  it('8 layers stepping at once give the results of the same steps in turn, and start no threads beyond the pools\' (no thread per call or per layer)', async () => {
    const M = 32, I = 128, O = 96, r = 4;  // 2^19 multiply-adds a call: threaded, and through the BLAS gate
    const make = (k: number) => new LinearLoRA(new Linear(I, O, { seed: k }), r, { seed: k, B: randomArray(r * O, k) });
    const par = Array.from({ length: 8 }, (_, k) => make(k));
    const seq = Array.from({ length: 8 }, (_, k) => make(k));
    const x = (k: number, s: number) => randomArray(M * I, k * 100 + s);
    const dy = (k: number, s: number) => randomArray(M * O, k * 100 + s + 50);
    // Warm up: every pool (libuv's, ours, the BLAS's) has started its threads.
    await Promise.all(par.map(async (l, k) => { await l.forwardAsync(x(k, 0)); await l.backwardAsync(dy(k, 0)); }));
    await Promise.all(seq.map(async (l, k) => { await l.forwardAsync(x(k, 0)); await l.backwardAsync(dy(k, 0)); }));
    const baseline = threadCount();
    let maxThreads = baseline ?? 0;
    const probe = setInterval(() => { maxThreads = Math.max(maxThreads, threadCount() ?? 0); }, 2);
    const outs = await Promise.all(par.map(async (l, k) => {
      const ys: Float32Array[] = [];
      for (let s = 1; s <= 4; s++) { ys.push((await l.forwardAsync(x(k, s))).dataSync()); ys.push((await l.backwardAsync(dy(k, s)))!.dataSync()); }
      return ys;
    }));
    clearInterval(probe);
    for (const [k, l] of seq.entries()) {
      const ys: Float32Array[] = [];
      for (let s = 1; s <= 4; s++) { ys.push(l.forward(x(k, s)).dataSync()); ys.push(l.backward(dy(k, s))!.dataSync()); }
      expect(outs[k]).toEqual(ys);
      expect(par[k].lora.A.grad!.dataSync()).toEqual(l.lora.A.grad!.dataSync());
    }
    if (baseline !== null) expect(maxThreads).toBe(baseline);
  });

  it('the pool\'s poll before sleeping (FUSED_LORA_SPIN_US: 0 never polls, a long poll, a malformed value the default) changes no result', () => {
    // A child process per setting: steps on layers large enough to run on the pool, the bits hashed.
    const root = path.resolve(__dirname, '..');
    const script = `
      const { Linear, LinearLoRA, tensor } = require(${JSON.stringify(path.join(root, 'dist', 'index.js'))});
      const crypto = require('node:crypto');
      const h = crypto.createHash('sha256');
      const rnd = (n, s) => Float32Array.from({ length: n }, (_, i) => Math.sin(s * 7919 + i * 12.9898) * 0.5);
      for (const [M, I, O, q] of [[1, 4096, 512, 'nf4'], [3, 1024, 1024, 'int8'], [64, 256, 384, null]]) {
        const l = new LinearLoRA(new Linear(I, O, { seed: 1, ...(q ? { quantize: q } : {}) }), 4, { seed: 2, B: rnd(4 * O, 3) });
        for (let s = 0; s < 3; s++) {
          const y = l.forward(tensor(rnd(M * I, s), [M, I])).dataSync();
          const dx = l.backward(tensor(rnd(M * O, s + 9), [M, O])).dataSync();
          h.update(Buffer.from(y.buffer)); h.update(Buffer.from(dx.buffer));
        }
        h.update(Buffer.from(l.lora.A.grad.dataSync().buffer));
      }
      process.stdout.write(h.digest('hex'));`;
    const run = (spin: string | undefined) => {
      const env = { ...process.env };
      if (spin === undefined) delete env.FUSED_LORA_SPIN_US; else env.FUSED_LORA_SPIN_US = spin;
      const r = spawnSync(process.execPath, ['-e', script], { env, encoding: 'utf8', timeout: 120_000 });
      expect(r.status, r.stderr).toBe(0);
      return r.stdout;
    };
    const digest = run(undefined);
    expect(digest).toMatch(/^[0-9a-f]{64}$/);
    for (const spin of ['0', '100000', 'abc', '-5']) expect(run(spin), `FUSED_LORA_SPIN_US=${spin}`).toBe(digest);
  });
});
