#!/usr/bin/env node
// `npm install` hook for the CUDA addon; a few lines of output, never the compiler's. In order:
// - a prebuilt addon for this platform ships in prebuilds/: nothing to do (it links the CUDA runtime
//   statically and loads without a GPU, reporting why no device is usable);
// - no nvcc on the PATH, or no NVIDIA driver on this machine: not built (FUSED_LORA_CUDA=1 builds
//   anyway, e.g. to package for another machine);
// - else builds build-cuda/Release/fused_lora_cuda.node with cmake-js (the package's, or `npx
//   cmake-js` when it is not installed, as in an app that depends on fused-lora), output captured
//   and shown only on failure. A failure leaves the CPU backend in place.
// FUSED_LORA_CUDA=0 skips all of it; FUSED_LORA_CUDA=1 also makes a failure fail the install.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');
const fs = require('node:fs');

const root = path.join(__dirname, '..');
const say = (msg) => console.log(`fused-lora: ${msg}`);
const want = process.env.FUSED_LORA_CUDA;
const CMAKE_JS = 'cmake-js@7';  // for `npx` where the package's own cmake-js is not installed

function onPath(cmd) {
  return spawnSync(cmd, ['--version'], { encoding: 'utf8' }).status === 0;
}

/** A driver is there when its device nodes or its library are: without one a build only costs time. */
function hasDriver() {
  if (fs.existsSync('/dev/nvidiactl') || fs.existsSync('/proc/driver/nvidia/version')) return true;
  const ld = spawnSync('/sbin/ldconfig', ['-p'], { encoding: 'utf8' });
  return ld.status === 0 && /libcuda\.so\.1\b/.test(ld.stdout);
}

function cmakeJs() {
  try {
    return [process.execPath, [require.resolve('cmake-js/bin/cmake-js', { paths: [root] })]];
  } catch {
    return ['npx', ['--yes', CMAKE_JS]];
  }
}

function main() {
  if (want === '0') return say('FUSED_LORA_CUDA=0: not building the CUDA addon (CPU backend only).');
  const prebuilt = path.join(root, 'prebuilds', `cuda-${process.platform}-${process.arch}`, 'fused_lora_cuda.node');
  if (fs.existsSync(prebuilt) && want !== '1') return say(`prebuilt CUDA addon: ${path.relative(root, prebuilt)}`);
  if (!onPath('nvcc')) return say('no nvcc on the PATH: CUDA addon not built, the CPU backend is used.');
  if (!hasDriver() && want !== '1') return say('nvcc found but no NVIDIA driver on this machine: CUDA addon not built (FUSED_LORA_CUDA=1 builds it anyway).');
  if (!onPath('cmake')) return say('nvcc found but cmake is not on the PATH: CUDA addon not built (needs CMake >= 3.25).');
  if (!fs.existsSync(path.join(root, 'CMakeLists.txt'))) return say('CMakeLists.txt missing: CUDA addon not built.');
  const [cmd, pre] = cmakeJs();
  say('building the CUDA addon (a minute or two)...');
  const r = spawnSync(cmd, [...pre, 'rebuild', '--out', 'build-cuda', '--config', 'Release'], { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status === 0) return say('CUDA addon built: build-cuda/Release/fused_lora_cuda.node');
  const tail = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n').slice(-15).join('\n');
  const msg = `the CUDA addon failed to build (exit ${r.status}); continuing with the CPU backend only. Its last lines:\n${tail}`;
  if (want === '1') { console.error(`fused-lora: ${msg}`); process.exit(1); }
  say(msg);
}

main();
