#!/usr/bin/env node
// `npm run build:prebuilds` (and `npm pack`, through prepack): the binaries the package ships, so an
// install on linux-x64 compiles nothing.
// - prebuilds/<platform>-<arch>/fused-lora.napi.node: the CPU addon, Node-API (one binary for every
//   Node >= 20), built by prebuildify and found by node-gyp-build at load time;
// - prebuilds/cuda-<platform>-<arch>/fused_lora_cuda.node: the CUDA addon (a folder of its own:
//   node-gyp-build takes any .node file in <platform>-<arch>/ for the CPU addon) (CUDA runtime linked
//   statically, so it loads without a GPU and reports why no device is usable), from the local build
//   in build-cuda/Release, built first when absent and nvcc is there; stripped. FUSED_LORA_CUDA=0
//   leaves it out.
// Platforms without a prebuild build from source at install, as before.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
const cudaDir = path.join(root, 'prebuilds', `cuda-${process.platform}-${process.arch}`);
const say = (msg) => console.log(`prebuilds: ${msg}`);

function run(cmd, args, env = {}) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } });
  if (r.status !== 0) {
    console.error(`prebuilds: ${cmd} ${args.join(' ')} failed (exit ${r.status})`);
    process.exit(1);
  }
}

const size = (f) => `${(fs.statSync(f).size / 2 ** 20).toFixed(1)} MiB`;

// The CPU addon.
// The target is the Node running this (Node-API makes the binary good for every later one too), so
// node-gyp builds against its headers, not a download of the newest release's.
run(process.execPath, [require.resolve('prebuildify/bin.js', { paths: [root] }), '--napi', '--strip', '--target', `node@${process.versions.node}`]);
for (const f of fs.readdirSync(dir).filter((f) => f.endsWith('.node'))) say(`${path.join(dir, f)} (${size(path.join(dir, f))})`);

// The CUDA addon.
const cuda = path.join(cudaDir, 'fused_lora_cuda.node');
fs.rmSync(cudaDir, { recursive: true, force: true });
if (process.env.FUSED_LORA_CUDA === '0') {
  say('FUSED_LORA_CUDA=0: no CUDA addon in the package');
} else {
  const built = path.join(root, 'build-cuda', 'Release', 'fused_lora_cuda.node');
  if (!fs.existsSync(built)) {
    if (spawnSync('nvcc', ['--version']).status !== 0) {
      say('no nvcc on the PATH and no build-cuda/Release/fused_lora_cuda.node: no CUDA addon in the package');
      process.exit(0);
    }
    run(process.execPath, [require.resolve('cmake-js/bin/cmake-js', { paths: [root] }), 'rebuild', '--out', 'build-cuda', '--config', 'Release']);
  }
  fs.mkdirSync(cudaDir, { recursive: true });
  fs.copyFileSync(built, cuda);
  if (spawnSync('strip', [cuda]).status !== 0) say('strip not found: the CUDA addon ships unstripped');
  say(`${cuda} (${size(cuda)})`);
}
