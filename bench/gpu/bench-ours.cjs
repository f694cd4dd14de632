#!/usr/bin/env node
// Times our CUDA kernels, bf16, I = O = 4096, r = 16, M in 1, 16, 512, 8192: the fused and unfused
// forward, the fused and unfused training step (forward, backward with dx, AdamW on A and B, and for
// the fused path the W_ext refresh), and our GEMM alone (x·Wᵀ). Random inputs (never zeros).
// Wall time over many launches between two stream synchronizations (the addon exposes no events);
// launches are asynchronous, so this is device time once the queue is full.
//   node bench/gpu/bench-ours.cjs --json FILE
'use strict';
const path = require('node:path');
const fs = require('node:fs');
const root = path.join(__dirname, '..', '..');
const { loadCuda } = require(path.join(root, 'dist', 'backends', 'cuda', 'binding.js'));
const argv = process.argv.slice(2);
const jsonOut = argv.includes('--json') ? argv[argv.indexOf('--json') + 1] : null;
const Ms = argv.includes('--m') ? argv[argv.indexOf('--m') + 1].split(',').map(Number) : [1, 16, 512, 8192];
const cu = loadCuda().binding;
if (!cu || !cu.deviceInfo().available) { console.log(`no device: ${cu ? cu.deviceInfo().reason : loadCuda().reason}`); process.exit(3); }

const dtype = 'bfloat16', I = 4096, O = 4096, r = 16, scaling = 1;
let seed = 7;
const rand = (n, s = 1) => { const a = new Float32Array(n); for (let i = 0; i < n; ++i) { seed = (seed * 1103515245 + 12345) >>> 0; a[i] = ((seed / 2 ** 32) * 2 - 1) * s; } return a; };
const ELEM = { float32: 4, bfloat16: 2 };
function buf(dt, n, data) { const b = cu.alloc(n * ELEM[dt]); if (data) cu.upload({ buffer: b, dtype: dt, data, rows: 1, cols: n }); else cu.fill({ buffer: b, dtype: dt, rows: 1, cols: n, value: 0 }); return b; }

function time(fn) {
  for (let i = 0; i < 3; ++i) fn();
  cu.synchronize();
  let t = process.hrtime.bigint(); fn(); cu.synchronize();
  const once = Number(process.hrtime.bigint() - t) / 1e6;
  const iters = Math.max(5, Math.min(2000, Math.ceil(200 / Math.max(once, 1e-3))));
  t = process.hrtime.bigint();
  for (let i = 0; i < iters; ++i) fn();
  cu.synchronize();
  return Number(process.hrtime.bigint() - t) / 1e6 / iters;
}

const rows = [];
const rp = cu.rankPad({ r }), ldx = I + rp, ldy = O + rp;
for (const M of Ms) {
  const x = rand(M * I), W = rand(O * I, 1 / 64), A0 = rand(I * r, 1 / 64), B0 = rand(r * O, 0.1), dy = rand(M * O);
  const xExt = buf(dtype, M * ldx); cu.upload({ buffer: xExt, dtype, data: x, rows: M, cols: I, ld: ldx });
  const wExt = buf(dtype, (O + rp) * ldx); cu.upload({ buffer: wExt, dtype, data: W, rows: O, cols: I, ld: ldx });
  const A = buf('float32', I * r, A0), B = buf('float32', r * O, B0);
  cu.refreshWExt({ dtype, I, O, r, scaling, wExt, A, B });
  const y = buf(dtype, M * O), dyExt = buf(dtype, M * ldy); cu.upload({ buffer: dyExt, dtype, data: dy, rows: M, cols: O, ld: ldy });
  const dsWork = buf('float32', M * r), dA = buf('float32', I * r), dB = buf('float32', r * O), dx = buf(dtype, M * I);
  const mA = buf('float32', I * r), vA = buf('float32', I * r), mB = buf('float32', r * O), vB = buf('float32', r * O);
  const xU = buf(dtype, M * I, x), WU = buf(dtype, O * I, W), At = buf(dtype, I * r), Bt = buf(dtype, r * O);
  const s = buf(dtype, M * r), u = buf(dtype, M * O), dyU = buf(dtype, M * O, dy), du = buf(dtype, M * O), dsU = buf(dtype, M * r);
  const L = { dtype, M, I, O, r, scaling };
  let step = 0;
  const fwdFused = () => cu.loraForwardFused({ ...L, xExt, wExt, A, y });
  const fwdUnfused = () => cu.loraForwardUnfused({ ...L, x: xU, W: WU, A: At, B: Bt, s, u, y });
  const opt = () => { ++step; cu.adamw({ n: I * r, param: A, grad: dA, m: mA, v: vA, lr: 1e-6, step }); cu.adamw({ n: r * O, param: B, grad: dB, m: mB, v: vB, lr: 1e-6, step }); };
  const trainFused = () => { fwdFused(); cu.loraBackwardFused({ ...L, xExt, dyExt, wExt, B, dsWork, dA, dB, dx }); opt(); cu.refreshWExt({ dtype, I, O, r, scaling, wExt, A, B }); };
  const trainUnfused = () => {
    cu.cast({ dst: At, dstDtype: dtype, src: A, srcDtype: 'float32', rows: I, cols: r });
    cu.cast({ dst: Bt, dstDtype: dtype, src: B, srcDtype: 'float32', rows: r, cols: O });
    fwdUnfused(); cu.loraBackwardUnfused({ ...L, x: xU, s, dy: dyU, W: WU, A: At, B: Bt, du, ds: dsU, dA, dB, dx }); opt();
  };
  const gemm = () => cu.gemm({ dtype, bLayout: 'nt', M, N: O, K: I, A: xU, B: WU, C: y });
  const fl = 2 * M * I * O;
  const res = {
    M,
    gemm_ms: time(gemm), fwd_fused_ms: time(fwdFused), fwd_unfused_ms: time(fwdUnfused),
    train_fused_ms: time(trainFused), train_unfused_ms: time(trainUnfused),
  };
  res.gemm_tflops = fl / res.gemm_ms / 1e9;
  rows.push(res);
  console.log(JSON.stringify(res));
  for (const b of [xExt, wExt, A, B, y, dyExt, dsWork, dA, dB, dx, mA, vA, mB, vB, xU, WU, At, Bt, s, u, dyU, du, dsU]) b.dispose();
}
if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify({ I, O, r, dtype, rows }, null, 2));
