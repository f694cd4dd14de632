// Several layers stepping at once on the libuv pool against the same steps in turn: wall time, CPU
// time and the process's thread count (the measurement behind the BLAS gate in
// native/addon/workers.cpp). `node scripts/oversubscription.cjs`; LAYERS (4), STEPS (30), M, I, O,
// and FUSED_LORA_BLAS=builtin to measure the built-in GEMM. Linux (reads /proc/self/status).
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Linear, LinearLoRA, tensor, backendInfo } = require(path.join(__dirname, '..', 'dist', 'index.js'));

const env = (k, d) => Number(process.env[k] || d);
const L = env('LAYERS', 4), STEPS = env('STEPS', 30), M = env('M', 256), I = env('I', 1024), O = env('O', 1024);
const threads = () => Number(/Threads:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]);
const layers = Array.from({ length: L }, (_, k) => new LinearLoRA(new Linear(I, O, { seed: k }), 16, { seed: k }));
const x = tensor(new Float32Array(M * I).fill(0.01), [M, I]);
const dy = tensor(new Float32Array(M * O).fill(0.01), [M, O]);

async function run(parallel) {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let maxThreads = 0;
  const probe = setInterval(() => { maxThreads = Math.max(maxThreads, threads()); }, 5);
  const steps = async (l) => { for (let s = 0; s < STEPS; s++) { await l.forwardAsync(x); await l.backwardAsync(dy); } };
  if (parallel) await Promise.all(layers.map(steps));
  else for (const l of layers) await steps(l);
  clearInterval(probe);
  const wall = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const cpuMs = (cpu.user + cpu.system) / 1000;
  return { mode: parallel ? 'parallel' : 'in turn', wallMs: Math.round(wall), cpuMs: Math.round(cpuMs), cpuPerWall: +(cpuMs / wall).toFixed(2), maxThreads };
}

(async () => {
  const info = backendInfo();
  const cpu = info.cpu || info;
  console.log(JSON.stringify({ blas: cpu.blas && (cpu.blas.name || cpu.blas), threads: cpu.threads, cores: os.availableParallelism(), layers: L, steps: STEPS, M, I, O }));
  await run(false);  // warm-up: every pool has started its threads
  for (let k = 0; k < 2; k++) {
    console.log(JSON.stringify(await run(false)));
    console.log(JSON.stringify(await run(true)));
  }
})();
