// The demo's training, on a smaller layer: the loss falls 100x within the step limit, the adapter
// recovers the hidden update, fused and unfused agree, and the reloaded adapter gives the same outputs.
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { runDemo } from '../lib/demo';
import { runMultiDemo } from '../lib/demo-multi';
import { LoraError } from '../lib/errors';

it('trains a rank-4 adapter on a 64 x 256 layer to a 100x lower loss, saves it in PEFT format and reloads it exactly', async () => {
  const lines: string[] = [];
  const r = await runDemo({
    inFeatures: 64, outFeatures: 256, rank: 4, samples: 512, batch: 64, maxSteps: 400, targetDrop: 100,
    progress: false, log: (l) => lines.push(l),
  });
  expect(r.drop).toBeGreaterThanOrEqual(100);
  expect(r.steps).toBeLessThanOrEqual(400);
  expect(r.updateRelErr).toBeLessThan(0.2);
  expect(r.fusedUnfusedRelErr).toBeLessThanOrEqual(1e-5);
  expect(r.reloadMaxAbsDiff).toBe(0);
  expect(fs.readdirSync(r.adapterDir).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
  const config = JSON.parse(fs.readFileSync(`${r.adapterDir}/adapter_config.json`, 'utf8'));
  expect(config).toMatchObject({ peft_type: 'LORA', r: 4, lora_alpha: 4, target_modules: ['proj'] });
  expect(lines.join('\n')).toMatch(/trainable/);
  fs.rmSync(r.adapterDir, { recursive: true });
});

describe('the demo on a reduced-precision base', () => {
  it.each([
    ['bfloat16', undefined, 0.5],
    ['float32', 'int8', (64 * 256 + 4 * 256) / (4 * 64 * 256)],
    ['float32', 'nf4', (32 * 256 + 4 * 256) / (4 * 64 * 256)],
    ['bfloat16', 'nf4', (32 * 256 + 4 * 256) / (4 * 64 * 256)],
  ] as const)('%s activations, %s W: the loss falls 100x, the update is recovered, fused and unfused agree within the bound of the dtype, the reload is exact', async (dtype, quantize, bytesRatio) => {
    const lines: string[] = [];
    const r = await runDemo({
      inFeatures: 64, outFeatures: 256, rank: 4, samples: 512, batch: 64, maxSteps: 400, targetDrop: 100,
      dtype, quantize, progress: false, log: (l) => lines.push(l),
    });
    expect(r.dtype).toBe(dtype);
    expect(r.quantize).toBe(quantize ?? null);
    expect(r.weightBytes.held / r.weightBytes.float32).toBeCloseTo(bytesRatio, 6);
    expect(r.drop).toBeGreaterThanOrEqual(100);
    expect(r.updateRelErr).toBeLessThan(0.2);
    expect(r.agreementTolerance).toBe(dtype === 'bfloat16' ? 2 ** -7 : 1e-5);
    expect(r.fusedUnfusedRelErr).toBeLessThanOrEqual(r.agreementTolerance);
    expect(r.reloadMaxAbsDiff).toBe(0);
    expect(lines.join('\n')).toMatch(new RegExp(`base: W in ${quantize ?? dtype}`));
    fs.rmSync(r.adapterDir, { recursive: true });
  });

  it('nf4 rounds I up to a multiple of 64, and says so', async () => {
    const lines: string[] = [];
    const r = await runDemo({
      inFeatures: 100, outFeatures: 64, rank: 2, samples: 128, batch: 64, maxSteps: 2, quantize: 'nf4', progress: false, log: (l) => lines.push(l),
    });
    expect(lines).toContain('nf4 quantizes W in blocks of 64 along I: I = 128 instead of 100');
    expect(r.weightBytes.float32).toBe(4 * 128 * 64);
    fs.rmSync(r.adapterDir, { recursive: true });
  });

  it.each([
    [{ dtype: 'float16' }, /^demo: expected 'float32' or 'bfloat16' for options\.dtype but received string "?float16"?$/],
    [{ quantize: 'int4' }, /^demo: expected 'int8' or 'nf4' for options\.quantize but received string "?int4"?$/],
  ])('refuses %j with ERR_ARGUMENT before building anything', async (options, message) => {
    const err = await runDemo({ ...options, progress: false, log: () => {} } as Parameters<typeof runDemo>[0]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LoraError);
    expect((err as LoraError).code).toBe('ERR_ARGUMENT');
    expect((err as LoraError).message).toMatch(message);
  });
});

describe('the many-adapter demo (fused-lora demo --adapters K)', () => {
  it('trains 8 hidden teachers at once in one batch: each adapter recovers its own update, one batch agrees with one by one, each reloads exactly', async () => {
    const lines: string[] = [];
    const r = await runMultiDemo({  // 8 rows of each adapter per step, M = 64
      inFeatures: 64, outFeatures: 256, rank: 4, adapters: 8, rowsPerAdapter: 8, samples: 512, maxSteps: 1500, targetDrop: 100,
      progress: false, log: (l) => lines.push(l),
    });
    expect(r.drop).toBeGreaterThanOrEqual(100);
    expect(r.adapters.map((a) => a.name)).toEqual(['task0', 'task1', 'task2', 'task3', 'task4', 'task5', 'task6', 'task7']);
    for (const a of r.adapters) {
      expect(a.updateRelErr, a.name).toBeLessThan(0.2);
      expect(a.nearestOtherRelErr, a.name).toBeGreaterThan(1);  // it found its own teacher, not a mix
    }
    expect(r.oneByOneRelErr.y).toBeLessThanOrEqual(1e-5);
    expect(r.oneByOneRelErr.dx).toBeLessThanOrEqual(1e-5);
    expect(r.oneByOneRelErr.dA).toBeLessThanOrEqual(1e-5);
    expect(r.oneByOneRelErr.dB).toBeLessThanOrEqual(1e-5);
    expect(r.reloadMaxAbsDiff).toBe(0);
    expect(r.stepMs.oneBatch).toBeGreaterThan(0);
    expect(r.speedup).toBeCloseTo(r.stepMs.oneByOne / r.stepMs.oneBatch, 10);
    expect(fs.readdirSync(r.adapterDir).sort()).toEqual(r.adapters.map((a) => a.name));
    const config = JSON.parse(fs.readFileSync(`${r.adapterDir}/task3/adapter_config.json`, 'utf8'));
    expect(config).toMatchObject({ peft_type: 'LORA', r: 4, lora_alpha: 4, target_modules: ['proj'] });
    expect(lines.join('\n')).toMatch(/task7: \|\|scaling\*A\*B - dW\|\| \/ \|\|dW\|\| = /);
    expect(lines.join('\n')).toMatch(/one batch [\d.]+ ms, one by one [\d.]+ ms \([\d.]+x\)/);
    fs.rmSync(r.adapterDir, { recursive: true });
  });

  it.each([
    [{ adapters: 0 }, /expected an integer from 1 to 64 for options\.adapters but received number 0$/],
    [{ adapters: 65 }, /expected an integer from 1 to 64 for options\.adapters but received number 65$/],
    [{ adapters: 1.5 }, /for options\.adapters but received number 1\.5$/],
    [{ rowsPerAdapter: 0 }, /expected a positive integer for options\.rowsPerAdapter but received number 0$/],
    [{ adapters: 8, rowsPerAdapter: 16, samples: 100 }, /at least adapters · rowsPerAdapter = 128 \(one step's rows\) for options\.samples but received number 100$/],
    [{ adaptors: 8 }, /adaptors/],  // a typo of a key is an unknown key
    [{ dtype: 'float16' }, /expected 'float32' or 'bfloat16' for options\.dtype but received string "float16"$/],
    [{ quantize: 'int4' }, /expected 'int8' or 'nf4' for options\.quantize but received string "int4"$/],
  ])('refuses %j with ERR_ARGUMENT before building anything', async (options, message) => {
    const err = await runMultiDemo({ ...options, progress: false, log: () => {} } as Parameters<typeof runMultiDemo>[0]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LoraError);
    expect((err as LoraError).code).toBe('ERR_ARGUMENT');
    expect((err as LoraError).message).toMatch(message);
  });
});
