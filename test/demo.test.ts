// The demo's training, on a smaller layer: the loss falls 100x within the step limit, the adapter
// recovers the hidden update, fused and unfused agree, and the reloaded adapter gives the same outputs.
import fs from 'node:fs';
import { expect, it } from 'vitest';
import { runDemo } from '../lib/demo';

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
