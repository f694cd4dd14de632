// The package as installed: the compiled entry points load from `require` and `import` alike, and
// FUSED_LORA_BLAS decides the backend, with backendInfo() saying why. Each case runs in a fresh
// node process, since the BLAS is chosen once per process.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const root = path.join(__dirname, '..');
const hasDist = fs.existsSync(path.join(root, 'dist', 'index.js'));

function node(code: string, env: Record<string, string> = {}, esm = false): string {
  return execFileSync(process.execPath, [...(esm ? ['--input-type=module'] : []), '-e', code], {
    cwd: root, env: { ...process.env, ...env }, encoding: 'utf8',
  });
}

describe('the built package', () => {
  it('is built (npm install runs `prepare`, which compiles lib/ to dist/)', () => {
    expect(hasDist).toBe(true);
  });

  it('loads with require and with import, exporting the public API the README lists', () => {
    const names = ['tensor', 'Tensor', 'Linear', 'LoRA', 'LinearLoRA', 'backendInfo', 'setNumThreads', 'ops', 'LoraError'];
    const cjs = JSON.parse(node(`const m = require('fused-lora'); console.log(JSON.stringify(Object.keys(m)))`));
    const esm = JSON.parse(node(`import * as m from 'fused-lora'; console.log(JSON.stringify(Object.keys(m)))`, {}, true));
    for (const n of names) {
      expect(cjs).toContain(n);
      expect(esm).toContain(n);
    }
  });

  it('fused-lora/workers loads with require and with import; fused-lora alone never loads BullMQ', () => {
    const names = ['createTrainingWorker', 'enqueueTraining', 'waitForTraining', 'checkTrainingJob', 'LoraError'];
    const cjs = JSON.parse(node(`const m = require('fused-lora/workers'); console.log(JSON.stringify(Object.keys(m)))`));
    const esm = JSON.parse(node(`import * as m from 'fused-lora/workers'; console.log(JSON.stringify(Object.keys(m)))`, {}, true));
    for (const n of names) {
      expect(cjs).toContain(n);
      expect(esm).toContain(n);
    }
    const loaded = (entry: string) => node(`require('${entry}'); console.log(Object.keys(require.cache).filter((f) => /node_modules[\\/](bullmq|ioredis)[\\/]/.test(f)).length)`).trim();
    expect(loaded('fused-lora')).toBe('0');
    // Even the workers' entry loads BullMQ only once a worker is created; then it does.
    expect(loaded('fused-lora/workers')).toBe('0');
    expect(Number(loaded('bullmq'))).toBeGreaterThan(0);
  });

  it('uses the built-in GEMM when FUSED_LORA_BLAS=builtin, and says so', () => {
    const info = JSON.parse(node(`console.log(JSON.stringify(require('fused-lora').backendInfo()))`, { FUSED_LORA_BLAS: 'builtin' }));
    expect(info.cpu.blas).toBe('builtin');
    expect(info.cpu.reason).toMatch(/FUSED_LORA_BLAS=builtin/);
    expect(info.cuda.available).toBe(false);
  });

  it('falls back to the built-in GEMM, with the reason, when the named library does not exist', () => {
    const info = JSON.parse(node(`console.log(JSON.stringify(require('fused-lora').backendInfo()))`, { FUSED_LORA_BLAS: '/nonexistent/libblas.so' }));
    expect(info.cpu.blas).toBe('builtin');
    expect(info.cpu.reason).toMatch(/could not be loaded/);
    expect(info.cpu.tried.join('\n')).toMatch(/nonexistent/);
  });

  it('setNumThreads changes the threads of our kernels and of the BLAS together', () => {
    const out = JSON.parse(node(`const m = require('fused-lora'); m.setNumThreads(1); console.log(JSON.stringify(m.backendInfo().cpu))`));
    expect(out.threads).toBe(1);
    if (out.blas !== 'builtin') expect(out.blasThreads).toBe(1);
  });
});
