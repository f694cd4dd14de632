// Memory: a long training loop with fresh input tensors does not grow (measured in a child process
// run with --expose-gc, after full GCs), layers built and dropped are freed, and a disposed tensor is
// ERR_DISPOSED wherever it is passed (disposing twice is harmless).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  AdamW, clipGradNorm, Linear, LinearLoRA, LoraError, mseLoss, ops, relu, saveAdapter, Sequential, tensor, zeros,
} from '../lib/index';
import type { LoraErrorCode } from '../lib/index';

const distBuilt = fs.existsSync(path.join(__dirname, '..', 'dist', 'index.js'));
const STEPS = 3000;
const MiB_LIMIT = 40;

describe.skipIf(!distBuilt)('memory over a long run (child process, --expose-gc)', () => {
  it(`${STEPS} training steps with fresh 96 KiB of inputs each (sync and async, AdamW, MSE): RSS grows less than ${MiB_LIMIT} MiB after GC; 200 layers built and dropped are freed`, () => {
    const script = path.join(__dirname, 'fixtures', 'leak-train.cjs');
    const out = execFileSync(process.execPath, ['--expose-gc', script, String(STEPS)], { encoding: 'utf8', timeout: 60_000 });
    const r = JSON.parse(out.trim().split('\n').pop()!) as {
      loss: number; base: Record<string, number>; trained: Record<string, number>; dropped: Record<string, number>;
    };
    const growth = r.trained.rss - r.base.rss;
    console.log(`RSS after warm-up ${r.base.rss.toFixed(1)} MiB, after ${STEPS} steps ${r.trained.rss.toFixed(1)} MiB (growth ${growth.toFixed(1)} MiB; ` +
      `ArrayBuffers ${r.base.arrayBuffers.toFixed(2)} -> ${r.trained.arrayBuffers.toFixed(2)} MiB), after 200 layers built and dropped ${r.dropped.rss.toFixed(1)} MiB`);
    expect(Number.isFinite(r.loss)).toBe(true);
    // Leaking one step's inputs would be 96 KiB x 2,700 steps = 250 MiB.
    expect(growth).toBeLessThan(MiB_LIMIT);
    expect(r.trained.arrayBuffers - r.base.arrayBuffers).toBeLessThan(8);
    expect(r.trained.heapUsed - r.base.heapUsed).toBeLessThan(8);
    // The 200 layers held 200 MiB of weights in all.
    expect(r.dropped.rss - r.trained.rss).toBeLessThan(MiB_LIMIT);
    expect(r.dropped.arrayBuffers - r.trained.arrayBuffers).toBeLessThan(8);
  });
});

describe('use after dispose', () => {
  const code = (fn: () => unknown): LoraErrorCode | 'none' => {
    try {
      fn();
      return 'none';
    } catch (e) {
      if (e instanceof LoraError) return e.code;
      throw e;
    }
  };

  it('a disposed tensor is ERR_DISPOSED wherever it is passed, and disposing anything twice is harmless', async () => {
    const M = 3, I = 4, O = 5, r = 2;
    const dead = (shape: number[]) => { const t = zeros(shape); t.dispose(); t.dispose(); return t; };
    const layer = new LinearLoRA(new Linear(I, O, { seed: 1 }), r, { seed: 2 });
    const live = { x: zeros([M, I]), W: zeros([O, I]), A: zeros([I, r]), B: zeros([r, O]) };
    const calls: Array<[string, () => unknown]> = [
      ['Tensor.reshape', () => dead([2, 2]).reshape([4])],
      ['Linear.forward(out)', () => layer.base.forward(live.x, { out: dead([M, O]) })],
      ['Linear.backward(dy)', () => layer.base.backward(dead([M, O]))],
      ['LinearLoRA.backward(out)', () => { layer.forward(live.x); return layer.backward(zeros([M, O]), { out: dead([M, I]) }); }],
      ['ops.loraForward(A)', () => ops.loraForward({ x: live.x, weight: live.W, A: dead([I, r]), B: live.B, scaling: 1 })],
      ['ops.loraBackward(s)', () => ops.loraBackward({ x: live.x, s: dead([M, r]), dy: zeros([M, O]), weight: live.W, A: live.A, B: live.B, scaling: 1 })],
      ['mseLoss(target)', () => mseLoss(zeros([2]), dead([2]))],
      ['relu', () => relu(dead([3]))],
      ['Sequential.forward', () => new Sequential([new Linear(I, O)]).forward(dead([M, I]))],
      ['new LinearLoRA(options.B)', () => new LinearLoRA(new Linear(I, O), r, { B: dead([r, O]) })],
    ];
    for (const [name, call] of calls) expect(code(call), name).toBe('ERR_DISPOSED');

    // A layer disposed under its optimizer: step, zeroGrad, clipGradNorm and saveAdapter refuse it.
    const gone = new LinearLoRA(new Linear(I, O, { seed: 1 }), r, { seed: 2 });
    const opt = new AdamW(gone.parameters());
    gone.dispose();
    gone.dispose();
    expect(code(() => opt.step())).toBe('ERR_DISPOSED');
    expect(code(() => opt.zeroGrad())).toBe('ERR_DISPOSED');
    expect(code(() => clipGradNorm(gone.parameters(), 1))).toBe('ERR_DISPOSED');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fused-lora-leak-'));
    try {
      await expect(saveAdapter(dir, { m: gone })).rejects.toMatchObject({ code: 'ERR_DISPOSED' });
      expect(fs.readdirSync(dir)).toEqual([]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    opt.dispose();
    opt.dispose();
    expect(code(() => opt.step())).toBe('ERR_DISPOSED');
    // The tensor itself after dispose: every accessor refuses, the metadata stays readable.
    const t = tensor(new Float32Array(6), [2, 3]);
    t.dispose();
    expect(code(() => t.dataSync())).toBe('ERR_DISPOSED');
    await expect(t.data()).rejects.toMatchObject({ code: 'ERR_DISPOSED' });
    expect([t.shape, t.size, t.disposed]).toEqual([[2, 3], 6, true]);
  });
});
