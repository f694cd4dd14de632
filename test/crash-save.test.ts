// A process killed (SIGKILL) while it saves an adapter leaves a directory that loads as the old
// adapter or the new one, never a mix or a corrupt file. saveAdapter writes optimizer.safetensors,
// adapter_model.safetensors and adapter_config.json in that order, each atomically (a temporary file
// in the same directory, fsync, rename, fsync of the directory). The set of three is not one atomic
// step: a kill between two renames leaves files of two saves, which the loader must detect (the
// optimizer state names the save id of the weights it belongs to) rather than load silently.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import * as lib from '../lib/index';
import { AdamW, LinearLoRA, loadAdapter, LoraError, saveAdapter } from '../lib/index';
import { Rng } from './fixtures/mutate';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { makeLayers, HYPER, generation } = require('./fixtures/crash-save-shapes.cjs') as {
  makeLayers: (l: typeof lib) => Record<string, LinearLoRA>; HYPER: object;
  generation: (layers: Record<string, LinearLoRA>, g: number) => { stateDict(): lib.AdamWState };
};

const distBuilt = fs.existsSync(path.join(__dirname, '..', 'dist', 'index.js'));
const KILLS = 10;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fused-lora-crash-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** The single value every element of `arrays` holds, or null when they hold more than one (a mix). */
function uniform(arrays: Float32Array[]): number | null {
  const v = arrays[0][0];
  return arrays.every((a) => a.every((x) => x === v)) ? v : null;
}

/** Starts the saving child; resolves once it is ready, with a way to kill it after `delay` ms. */
function startSaver(dir: string, first: number): Promise<{ killAfter: (delay: number) => Promise<number> }> {
  const child = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'crash-save.cjs'), dir, String(first)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.startsWith('ready\n')) resolve({
        killAfter: (delay) => new Promise((done) => {
          setTimeout(() => child.kill('SIGKILL'), delay);
          child.on('close', () => done(out.split('\n').filter((l) => l.startsWith('saved')).length));  // after stdout is drained
        }),
      });
    });
    child.once('exit', (code, signal) => reject(new Error(`the saver exited before it was ready: ${code ?? signal}`)));
  });
}

describe.skipIf(!distBuilt)('saveAdapter killed mid-write', () => {
  it(`${KILLS} SIGKILLs at random moments of a save loop: the weights are always one whole save; the optimizer state loads only with the weights it was saved with`, async () => {
    const dir = path.join(tmp, 'adapter');
    // Generation 0, saved whole before any kill.
    const layers0 = makeLayers(lib);
    await saveAdapter(dir, layers0, { optimizer: generation(layers0, 0) });
    const rng = new Rng(Number(process.env.FUZZ_SEED ?? 7));
    let next = 1, last = 0, midWrite = 0, mixes = 0;
    for (let k = 0; k < KILLS; k++) {
      const saver = await startSaver(dir, next);
      const completed = await saver.killAfter(5 + rng.int(250));
      next += completed + 1;  // the generation that was being written when the kill came
      const leftovers = fs.readdirSync(dir).filter((f) => f.endsWith('.tmp'));
      if (leftovers.length > 0) midWrite++;

      // Without the optimizer: the weights are one whole save, the latest complete one or the one
      // being written (its file was renamed into place before the kill), never older than before.
      const layers = makeLayers(lib);
      const result = await loadAdapter(dir, layers);
      expect(result.modules).toHaveLength(2);
      const g = uniform(Object.values(layers).flatMap((l) => [l.lora.A.dataSync(), l.lora.B.dataSync()]));
      expect(g, `kill ${k}: the weights mix two saves`).not.toBeNull();
      expect(g!).toBeGreaterThanOrEqual(last);
      expect(g!).toBeLessThanOrEqual(next - 1);
      last = g!;

      // With the optimizer: its state is the same save's (step and every tensor = g), or the load is
      // refused with ERR_IO and nothing changed.
      const fresh = makeLayers(lib);
      const opt = new AdamW(Object.values(fresh).flatMap((l) => l.parameters()), HYPER);
      const withOpt = await loadAdapter(dir, fresh, { optimizer: opt }).catch((e: unknown) => e);
      if (withOpt instanceof LoraError) {
        expect(withOpt.code).toBe('ERR_IO');
        expect(withOpt.message).toMatch(/another save/);
        expect(Object.values(fresh).every((l) => l.lora.B.dataSync().every((v) => v === 0))).toBe(true);  // B starts at 0
        expect(opt.stepCount).toBe(0);
        mixes++;
      } else {
        expect(withOpt).toMatchObject({ optimizer: true });
        expect(opt.stepCount).toBe(g);
        expect(uniform(Object.values(opt.stateDict().tensors))).toBe(g);
      }
    }
    console.log(`${KILLS} kills: ${midWrite} left a temporary file (killed mid-write), ${mixes} left an optimizer state of another save than the weights (detected, ERR_IO); weights reached generation ${last}`);
    // A complete save afterwards succeeds over whatever the kills left, and loads whole.
    const layers = makeLayers(lib);
    for (const l of Object.values(layers)) { l.lora.A.buffer().fill(-1); l.lora.B.buffer().fill(-1); }
    await saveAdapter(dir, layers);
    const back = makeLayers(lib);
    await loadAdapter(dir, back);
    expect(uniform(Object.values(back).flatMap((l) => [l.lora.A.dataSync(), l.lora.B.dataSync()]))).toBe(-1);
  });
});
