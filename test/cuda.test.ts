// The CUDA addon builds (with nvcc, through cmake-js), loads on a machine without a GPU, and says
// why no device is available; backendInfo().cuda and the device choice report the same.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { wExtLayout } from './fixtures/tile-math';

const root = path.join(__dirname, '..');
const addon = path.join(root, 'build-cuda', 'Release', 'fused_lora_cuda.node');
const hasNvcc = spawnSync('nvcc', ['--version']).status === 0;
if (!hasNvcc) console.warn('test/cuda.test.ts: skipped, nvcc is not on the PATH (the CUDA addon cannot be built here)');

function node(code: string, env: Record<string, string> = {}): string {
  return execFileSync(process.execPath, ['-e', code], { cwd: root, env: { ...process.env, ...env }, encoding: 'utf8' });
}

// The W_ext layout export (wExtLayout) comes with a native change that may not be built here yet.
const hasLayout = hasNvcc && fs.existsSync(addon) && node(`console.log(typeof require(${JSON.stringify(addon)}).wExtLayout)`).trim() === 'function';
if (hasNvcc && !hasLayout) console.warn('test/cuda.test.ts: the built CUDA addon has no wExtLayout export: its check against the CPU fake is skipped');

describe.skipIf(!hasNvcc)('the CUDA addon', () => {
  it('builds with cmake-js and nvcc (incrementally: up to date is a few seconds)', () => {
    const cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
    execFileSync(process.execPath, [cmakeJs, 'build', '--out', 'build-cuda', '--config', 'Release'],
      { cwd: root, stdio: 'pipe', timeout: 600_000 });
    expect(fs.existsSync(addon)).toBe(true);
  }, 600_000);

  it('is loaded per worker_thread: after a worker that used it exits, the main thread still gets LoraErrors', () => {
    // A JS class kept in a process-wide static, made in one thread's env and used from another, crashed
    // the CPU addon (segfault); each env keeps its own references.
    const out = node(`
      const { Worker } = require('node:worker_threads');
      const { LoraError } = require('./dist/errors.js');
      const main = require(${JSON.stringify(addon)});
      main.setErrorClass(LoraError);  // registered here first; the worker then registers its own
      const w = new Worker(\`const m = require(${JSON.stringify(addon)}); m.setErrorClass(require('./dist/errors.js').LoraError);
        try { m.alloc(-1); } catch (e) { require('node:worker_threads').parentPort.postMessage(e.code); }\`, { eval: true });
      w.on('message', (code) => console.log('worker ' + code));
      w.on('exit', () => {
        try { main.alloc(-1); } catch (e) { console.log('main ' + (e instanceof LoraError) + ' ' + e.code); }
      });`);
    expect(out).toMatch(/worker ERR_ARGUMENT/);
    expect(out).toMatch(/main true ERR_ARGUMENT/);
  });

  it.skipIf(!hasLayout)("wExtLayout gives, without a device, the layout the CPU fake uses (r_pad from tile_math.h's rank step) at every padding boundary", () => {
    const shapes = [[1, 1, 1], [7, 9, 15], [7, 9, 16], [7, 9, 17], [768, 3072, 8], [4096, 4096, 64], [11008, 4096, 3], [20000, 12288, 33]];
    const got = JSON.parse(node(`const m = require(${JSON.stringify(addon)});
      console.log(JSON.stringify(${JSON.stringify(shapes)}.map(([I, O, r]) => m.wExtLayout({ I, O, r }))));`));
    expect(got).toEqual(shapes.map(([I, O, r]) => wExtLayout(I, O, r)));
  });

  it('links the CUDA runtime statically (no libcudart.so needed to load)', () => {
    const ldd = spawnSync('ldd', [addon], { encoding: 'utf8' });
    if (ldd.status === 0) expect(ldd.stdout).not.toMatch(/libcudart/);
    expect(ldd.stdout ?? '').not.toMatch(/libcublas/);
  });

  it('loads, and deviceInfo() says whether a device answers and, if not, why', () => {
    const info = JSON.parse(node(`console.log(JSON.stringify(require(${JSON.stringify(addon)}).deviceInfo()))`));
    expect(info.runtimeVersion).toBeGreaterThanOrEqual(12000);
    if (info.available) {
      expect(info.name).not.toBe('');
      expect(info.computeCapability).toMatch(/^\d+\.\d+$/);
      expect(info.memoryBytes).toBeGreaterThan(0);
    } else {
      expect(info.reason).toMatch(/no CUDA driver|no CUDA device|driver too old|compute capability|unavailable/);
      expect(info.name).toBe('');
    }
  });

  it('without a device, ops throw ERR_DEVICE with the reason, and the process survives', () => {
    const out = JSON.parse(node(`
      const { loadCuda } = require('./dist/backends/cuda/binding.js');
      const b = loadCuda().binding;
      const info = b.deviceInfo();
      let err = null;
      try { b.alloc(1024).dispose(); } catch (e) { err = { code: e.code, name: e.name, message: e.message }; }
      console.log(JSON.stringify({ available: info.available, err }));`));
    if (!out.available) {
      expect(out.err.code).toBe('ERR_DEVICE');
      expect(out.err.name).toBe('LoraError');
      expect(out.err.message).toMatch(/no CUDA/);
    } else {
      expect(out.err).toBe(null);
    }
  });

  it('exports the multi-adapter ops, which check their shapes before any device work', () => {
    const out = JSON.parse(node(`
      const { loadCuda } = require('./dist/backends/cuda/binding.js');
      const b = loadCuda().binding;
      const codes = [];
      for (const op of ['multiLoraRefresh', 'multiLoraForwardFused', 'multiLoraBackwardFused']) {
        try { b[op]({ dtype: 'float32', M: 2, I: 4, O: 3, R: 5 }); codes.push(null); } catch (e) { codes.push(e.code + ' ' + e.message); }
      }
      console.log(JSON.stringify(codes));`));
    expect(out).toHaveLength(3);
    for (const c of out) expect(c).toMatch(/^ERR_SHAPE .*expected a multiple of the rank step \(16\) for R but received 5/);
  });

  it('backendInfo().cuda reports the addon: loaded, and available or the reason', () => {
    const info = JSON.parse(node(`console.log(JSON.stringify(require('./dist/index.js').backendInfo().cuda))`));
    expect(info.loaded).toBe(true);
    expect(info.addonPath).toBe(addon);
    if (!info.available) expect(info.reason).toMatch(/no CUDA|driver|compute capability/);
    else expect(info.name).not.toBe('');
  });

  it("device 'auto' falls back to the CPU with the reason; 'cuda' without a device is ERR_DEVICE", () => {
    const out = JSON.parse(node(`
      const c = require('./dist/backends/cuda/binding.js'), { resolveDevice } = require('./dist/placement.js');
      const auto = resolveDevice('auto');
      let err = null;
      try { resolveDevice('cuda'); } catch (e) { err = e.code; }
      console.log(JSON.stringify({ auto, err, avail: c.cudaAvailable() }));`));
    if (!out.avail) {
      expect(out.auto.device).toBe('cpu');
      expect(out.auto.reason).toMatch(/CPU, because/);
      expect(out.err).toBe('ERR_DEVICE');
    } else {
      expect(out.auto.device).toBe('cuda');
    }
  });
});

describe('without the CUDA addon', () => {
  it('backendInfo().cuda says no addon is built, and auto picks the CPU', () => {
    const out = JSON.parse(node(`
      const info = require('./dist/index.js').backendInfo().cuda;
      const choice = require('./dist/placement.js').resolveDevice('auto');
      console.log(JSON.stringify({ info, choice }));`, { FUSED_LORA_CUDA_ADDON: path.join(root, 'build-cuda', 'nowhere.node') }));
    expect(out.info.loaded).toBe(false);
    expect(out.info.available).toBe(false);
    expect(out.info.reason).toMatch(/no CUDA addon built/);
    expect(out.choice.device).toBe('cpu');
  });
});
