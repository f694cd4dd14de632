// What scripts/asan.sh and scripts/valgrind.sh run against an instrumented addon: a training loop over
// many shapes (sync and async, dropout, fused and unfused, every optimizer, loss and activation,
// merge), two worker_threads doing the same, layers and GEMMs of real widths, and random calls
// straight into the addon's exports (test/fixtures/native-fuzz.cjs: the second line of argument
// checks, and the kernels behind it).
//
//   FUSED_LORA_ROOT  the package root to load (a copy with the instrumented addon); default: this repo
//   FUZZ_CALLS       random native calls (default 20000); STEPS training steps per shape (default 6)
'use strict';
const path = require('node:path');
const { Worker, isMainThread, workerData, parentPort } = require('node:worker_threads');

const root = process.env.FUSED_LORA_ROOT || path.join(__dirname, '..');
const lib = require(path.join(root, 'dist', 'index.js'));
const { native } = require(path.join(root, 'dist', 'backends', 'cpu', 'binding.js'));
const { fuzzNative } = require(path.join(__dirname, '..', 'test', 'fixtures', 'native-fuzz.cjs'));

const STEPS = Number(process.env.STEPS || 6);
const CALLS = Number(process.env.FUZZ_CALLS || 20000);

function data(n, seed) {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; a[i] = s / 2 ** 31 - 1; }
  return a;
}

// Shapes that reach every code path: empty batches, 1-wide layers, rank above the width, sizes
// around the kernels' tile edges, and one large enough to thread and to take the BLAS gate.
const SHAPES = [
  [0, 5, 3, 2], [1, 1, 1, 1], [1, 7, 9, 8], [3, 2, 17, 4], [7, 33, 15, 3], [8, 16, 16, 16], [9, 65, 63, 5], [17, 129, 31, 2], [64, 256, 192, 16],
];

async function train(seedBase) {
  let checks = 0;
  for (const [k, [M, I, O, r]] of SHAPES.entries()) {
    for (const fused of [true, false]) {
      const seed = seedBase + k;
      const layer = new lib.LinearLoRA(new lib.Linear(I, O, { seed, bias: k % 2 === 0 }), r, { seed, fused, dropout: k % 3 === 0 ? 0 : 0.25, alpha: 2 * r, rslora: k % 4 === 1 });
      const opts = [new lib.AdamW(layer.parameters(), { lr: 1e-3 }), new lib.SGD(layer.parameters(), { lr: 1e-2, momentum: 0.9, nesterov: k % 2 === 0 })];
      const act = k % 2 ? new lib.GELU() : new lib.ReLU();
      for (let s = 0; s < STEPS; s++) {
        const x = lib.tensor(data(M * I, seed * 100 + s), [M, I]);
        const y = s % 2 ? await layer.forwardAsync(x) : layer.forward(x);
        const h = act.forward(y);
        const loss = M > 0 ? (s % 3 ? lib.mseLoss(h, data(M * O, s)) : lib.crossEntropyLoss(h, Int32Array.from({ length: M }, (_, m) => (m + s) % O))) : null;
        const dh = loss ? loss.grad : lib.zeros([M, O]);
        const dy = act.backward(dh);
        const dx = s % 2 ? await layer.backwardAsync(dy, { inputGrad: s % 4 !== 1 }) : layer.backward(dy);
        if (dx) checks += dx.size;
        lib.clipGradNorm(layer.parameters(), 1.0);
        opts[s % 2].step();
        opts[s % 2].zeroGrad();
      }
      layer.eval();
      layer.merge();
      layer.forward(data(M * I, 5));
      layer.unmerge();
      const ops = lib.ops.loraForward({ x: data(M * I, 1), weight: layer.base.weight, A: layer.lora.A, B: layer.lora.B, scaling: layer.scaling, M, I, O, r });
      lib.ops.loraBackward({ x: data(M * I, 1), s: ops.s, dy: data(M * O, 2), weight: layer.base.weight, A: layer.lora.A, B: layer.lora.B, scaling: layer.scaling });
      // The weight stored (I, O), as tf.layers.dense keeps it, with dropout on the LoRA path.
      const io = { x: data(M * I, 1), weight: data(I * O, 6), A: layer.lora.A, B: layer.lora.B, scaling: layer.scaling, M, I, O, r, fanInFanOut: true };
      const fio = lib.ops.loraForward({ ...io, dropout: { p: 0.25, seed, step: 1 } });
      lib.ops.loraBackward({ ...io, s: fio.s, dy: data(M * O, 2), dropout: { p: 0.25, mask: fio.mask, xDrop: fio.xDrop } });
      lib.relu(data(M * O, 3));
      lib.gelu(data(M * O, 4));
      opts.forEach((o) => o.dispose());
      layer.dispose();
    }
  }
  return checks;
}

// Layers and GEMMs wider than one N panel of the built-in GEMM (4080-4096 columns) at small M, every
// transpose case, on the built-in GEMM and on whatever sgemm() routes to: where a block size that was
// not whole slivers packed past its buffer. AddressSanitizer sees an overflow past an allocation;
// the sanitizer build's FL_DCHECKs see one that lands inside a larger buffer grown by an earlier call.
// 128 and 129 rows: the last row count whose frozen GEMMs take the built-in GEMM beside a BLAS (B
// packed a sliver at a time, dy·W's by its first micro-kernel) and the first past it.
const WIDE_LAYERS = [[2, 1000, 10000, 10], [4, 64, 4081, 8], [16, 4096, 4096, 16], [9, 768, 3072, 64], [3, 4096, 11008, 3],
  [128, 1000, 4100, 8], [129, 4100, 1000, 4]];
const WIDE_GEMMS = [[4, 4081, 64], [2, 10000, 1000], [16, 4096, 16], [16, 8193, 40], [7, 12289, 33], [64, 4097, 129]];

async function wide() {
  for (const [M, I, O, r] of WIDE_LAYERS) {
    for (const fused of [true, false]) {
      const layer = new lib.LinearLoRA(new lib.Linear(I, O, { seed: I + O, bias: fused }), r, { seed: r, fused, B: data(r * O, 3) });
      for (let s = 0; s < 2; s++) {
        const x = lib.tensor(data(M * I, s + 1), [M, I]);
        const y = s ? await layer.forwardAsync(x) : layer.forward(x);
        const dy = data(y.size, s + 2);
        if (s) await layer.backwardAsync(dy); else layer.backward(dy);
      }
      layer.dispose();
    }
  }
  // The reduced-precision bases: a wide bf16 layer and a wide nf4 one (and int8), blocked and decode,
  // through every packer (NT and NN, K past one KC slab, N past one NC panel).
  for (const [M, I, O, r, opts] of [[16, 4096, 4097, 8, { dtype: 'bfloat16' }], [3, 4096, 11008, 4, { dtype: 'bfloat16' }],
    [16, 4096, 4097, 8, { quantize: 'nf4' }], [1, 4096, 12288, 4, { quantize: 'nf4' }], [9, 1025, 4097, 4, { quantize: 'int8' }]]) {
    const layer = new lib.LinearLoRA(new lib.Linear(I, O, { seed: I + O, bias: true, ...opts }), r, { seed: r, B: data(r * O, 3) });
    const dtype = opts.dtype ?? 'float32';
    const x = lib.tensor(data(M * I, 1), [M, I], { dtype });
    const y = layer.forward(x);
    await layer.forwardAsync(x);
    layer.backward(lib.tensor(data(y.size, 2), y.shape, { dtype }));
  }
  for (const [M, N, K] of WIDE_GEMMS) {
    for (const [ta, tb] of [[false, false], [false, true], [true, false], [true, true]]) {
      const lda = (ta ? M : K) + 1, ldb = (tb ? K : N) + 1, ldc = N + 1;
      const A = data((ta ? K : M) * lda, M), B = data((tb ? N : K) * ldb, N), C = new Float32Array(M * ldc);
      for (const backend of ['builtin', 'auto']) native.gemm({ transA: ta, transB: tb, M, N, K, alpha: 1, A, lda, B, ldb, beta: 0.5, C, ldc, backend });
    }
  }
}

// MultiLoRALinear at wide and awkward shapes: adapters of mixed ranks and dropout, rows grouped,
// interleaved and with frozen-only rows, sync and async, an adapter added and removed between steps;
// float32 bases and reduced-precision ones (bf16 activations, quantized weights).
const MULTI_LAYERS = [[24, 4096, 4096, {}], [12, 768, 3072, {}], [7, 4096, 11008, {}], [5, 33, 17, {}], [0, 9, 7, {}],
  [24, 4096, 4097, { quantize: 'nf4' }], [7, 4096, 11008, { dtype: 'bfloat16' }], [12, 768, 3071, { quantize: 'int8', dtype: 'bfloat16' }], [5, 33, 17, { quantize: 'int8' }]];

async function multi() {
  for (const [k, [M, I, O, opts]] of MULTI_LAYERS.entries()) {
    const dtype = opts.dtype || 'float32';
    const layer = new lib.MultiLoRALinear(new lib.Linear(I, O, { seed: k, bias: k % 2 === 0, ...opts }), {
      adapters: { a: { rank: 16, seed: 1 }, b: { rank: 3, dropout: 0.25, seed: 2, B: data(3 * O, 3) }, c: { rank: 1, alpha: 4, rslora: true, seed: 3 } },
    });
    const names = ['a', 'b', 'c', '__base__'];
    const layouts = [
      Array.from({ length: M }, (_, m) => names[Math.min(3, Math.floor((4 * m) / Math.max(M, 1)))]),
      Array.from({ length: M }, (_, m) => names[m % 4]),
      Array.from({ length: M }, (_, m) => names[(m * 7 + 3) % 3]),
    ];
    for (const [s, adapterNames] of layouts.entries()) {
      const x = lib.tensor(data(M * I, s + 1), [M, I], { dtype });
      const y = s % 2 ? await layer.forwardAsync(x, { adapterNames }) : layer.forward(x, { adapterNames });
      const dy = lib.tensor(data(y.size, s + 2), y.shape, { dtype });
      if (s % 2) await layer.backwardAsync(dy); else layer.backward(dy, { inputGrad: s !== 2 });
      if (s === 0) {
        layer.removeAdapter('c');
        layer.addAdapter('c', { rank: 5, seed: 4 });
      }
    }
    layer.dispose();
  }
}

async function main() {
  const info = lib.backendInfo();
  const blas = info.cpu ? info.cpu.blas : info.blas && info.blas.name;
  const started = Date.now();
  const workers = [1, 2].map((w) => new Promise((resolve, reject) => {
    const t = new Worker(__filename, { workerData: { seed: 1000 * w }, env: process.env });
    t.on('message', resolve);
    t.on('error', reject);
    t.on('exit', (code) => code !== 0 && reject(new Error(`worker exited with ${code}`)));
  }));
  await train(1);
  await wide();
  await multi();
  const fuzz = await fuzzNative(native, lib.LoraError, { seed: 4242, iterations: CALLS, guarded: false });
  await Promise.all(workers);
  // After the workers are gone, the main thread's errors still come from its own LoraError class.
  let ok = false;
  try { native.loraForward({ M: -1 }); } catch (e) { ok = e instanceof lib.LoraError; }
  if (!ok) throw new Error('native error after the workers exited is not a LoraError');
  const isa = info.cpu ? info.cpu.builtinKernel : undefined, lowp = info.cpu ? info.cpu.lowpKernel : undefined;
  console.log(JSON.stringify({ blas, isa, lowp, shapes: SHAPES.length, wideLayers: WIDE_LAYERS.length, wideGemms: WIDE_GEMMS.length * 4, multiLayers: MULTI_LAYERS.length, steps: STEPS, workers: 2, nativeCalls: CALLS, ran: fuzz.ran, refused: fuzz.refused, async: fuzz.async, seconds: (Date.now() - started) / 1000 }));
}

if (isMainThread) {
  main().catch((e) => { console.error(e); process.exit(1); });
} else {
  train(workerData.seed).then(() => parentPort.postMessage('done'), (e) => { throw e; });
}
