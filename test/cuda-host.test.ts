// The CUDA kernels' index arithmetic (native/cuda/tile_math.h), checked on the CPU: the header is
// plain __host__ __device__ code, so g++ compiles it with a test program that needs no GPU.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const root = path.join(__dirname, '..');
const hasGxx = spawnSync('g++', ['--version']).status === 0;

describe.skipIf(!hasGxx)('tile math of the CUDA kernels, on the CPU (g++)', () => {
  it('tile counts, loader coverage, ragged-edge predicates, fragment layouts, banks, r_pad and W_ext offsets all hold', () => {
    const out = path.join(root, 'build-host');
    fs.mkdirSync(out, { recursive: true });
    const exe = path.join(out, 'tile_math_test');
    execFileSync('g++', ['-std=c++17', '-O1', '-Wall', '-Werror', '-I', path.join(root, 'native/cuda'),
      path.join(root, 'native/cuda/test/tile_math_test.cpp'), '-o', exe]);
    const r = spawnSync(exe, { encoding: 'utf8' });
    expect(r.stdout).toMatch(/tile_math: \d+ checks, 0 failed/);
    expect(r.status).toBe(0);
  });
});
