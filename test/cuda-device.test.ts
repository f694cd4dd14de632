// The CUDA device suite (test/gpu/device-suite.cjs): every op against a float64 reference in each
// dtype over the numerics tests' shape sweep, NaN-poisoned outputs, guard bands, fused = unfused.
// Runs only where the CUDA addon loads and a device answers; elsewhere it is skipped with the reason.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { cudaStatus } from '../lib/backends/cuda/binding';

const root = path.join(__dirname, '..');
const status = cudaStatus();
if (!status.available) console.warn(`test/cuda-device.test.ts: skipped, ${status.reason}`);

describe.skipIf(!status.available)(`the CUDA device suite (${status.available ? status.device!.name : status.reason})`, () => {
  it('every op matches the float64 reference within its dtype tolerance, writes only its outputs, and fused equals unfused', () => {
    const r = spawnSync(process.execPath, [path.join(root, 'test', 'gpu', 'device-suite.cjs')], { cwd: root, encoding: 'utf8', timeout: 900_000 });
    const failures = (r.stdout ?? '').split('\n').filter((l) => l.startsWith('FAIL'));
    expect(failures).toEqual([]);
    expect(r.status).toBe(0);
  }, 900_000);
});
