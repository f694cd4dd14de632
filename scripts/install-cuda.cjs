#!/usr/bin/env node
// `npm install` hook: builds the CUDA addon (build-cuda/Release/fused_lora_cuda.node) when nvcc is on
// the PATH, and carries on without it when not, or when the build fails, saying so. The CPU addon
// is unaffected either way. `npm run build:cuda` is the loud version: it fails on any error.
// FUSED_LORA_CUDA=0 skips the attempt; FUSED_LORA_CUDA=1 makes a failure fail the install.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');
const fs = require('node:fs');

const root = path.join(__dirname, '..');
const say = (msg) => console.log(`fused-lora: ${msg}`);
const want = process.env.FUSED_LORA_CUDA;

function onPath(cmd) {
  const r = spawnSync(cmd, ['--version'], { encoding: 'utf8' });
  return r.status === 0;
}

function main() {
  if (want === '0') return say('FUSED_LORA_CUDA=0: not building the CUDA addon (CPU backend only).');
  if (!onPath('nvcc')) return say('nvcc is not on the PATH: CUDA addon not built, the CPU backend is used. ' +
    'Install the CUDA toolkit and run `npm run build:cuda` to add it.');
  if (!onPath('cmake')) return say('nvcc found but cmake is not on the PATH: CUDA addon not built (needs CMake >= 3.25).');
  let cmakeJs;
  try {
    cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
  } catch {
    return say('nvcc found but cmake-js is not installed: CUDA addon not built. Run `npm i -D cmake-js && npm run build:cuda`.');
  }
  if (!fs.existsSync(path.join(root, 'CMakeLists.txt'))) return say('CMakeLists.txt missing: CUDA addon not built.');
  say('nvcc found: building the CUDA addon (this takes a minute or two)...');
  const r = spawnSync(process.execPath, [cmakeJs, 'rebuild', '--out', 'build-cuda', '--config', 'Release'],
    { cwd: root, stdio: 'inherit' });
  if (r.status === 0) return say('CUDA addon built: build-cuda/Release/fused_lora_cuda.node');
  const msg = `the CUDA addon failed to build (exit ${r.status}); continuing with the CPU backend only. ` +
    'Run `npm run build:cuda` to see the error.';
  if (want === '1') { console.error(`fused-lora: ${msg}`); process.exit(1); }
  say(msg);
}

main();
