// The device suite's public-API checks (test/gpu/device-suite.cjs: the TS layer on the device against
// the CPU layers), run here on the CPU fake of the CUDA addon: the same script that checks the device must
// pass on the fake, so a mistake in it shows before the GPU run, not during it.
import { describe, expect, it } from 'vitest';
import * as api from '../lib/index';
import { useFakeCuda } from './fixtures/fake-cuda-env';

interface Suite {
  apiCases(api: unknown, binding: unknown, options: { quick: boolean }): Promise<void>;
  results: { passed: number; failed: number; failures: string[] };
}

describe("the device suite's API checks, on the fake CUDA binding", () => {
  const fake = useFakeCuda();

  it('all pass, and every device byte they allocate is given back', async () => {
    const suite = require('./gpu/device-suite.cjs') as Suite;
    await suite.apiCases(api, fake(), { quick: true });
    expect(suite.results.failures).toEqual([]);
    expect(suite.results.passed).toBeGreaterThan(100);
    expect(fake().liveBuffers).toBe(0);
  }, 120_000);
});
