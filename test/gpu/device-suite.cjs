#!/usr/bin/env node
// The CUDA device suite: every op of the CUDA addon against a float64 CPU reference, in each dtype,
// over the shape sweep of the numerics tests (test/reference.ts), with NaN-poisoned outputs and
// guard bands after each buffer (and in the gaps of leading dimensions larger than the width), and
// fused against unfused.
// Then the public TS API on the device: device tensors and .to() round trips, Linear and
// LinearLoRA on 'cuda' against the same layers on the CPU (fused and unfused, each dtype), AdamW on
// the device and the W_ext refresh it triggers, the losses, merge, the async twins, mixed-device
// errors, and every device byte given back after dispose().
// A plain node script (no vitest), so it runs on a GPU machine that has node but no node_modules:
// it needs only dist/, build-cuda/Release/fused_lora_cuda.node and (for the API checks, which use
// the CPU layers as their reference) build/Release/fused_lora.node.
//
//   node test/gpu/device-suite.cjs [--quick] [--api-only] [--json FILE]
//     --quick      small shapes only (for compute-sanitizer runs)
//     --api-only   only the public API checks, not the kernel sweep
//   exit 0: all passed; 1: a check failed; 3: no device (prints "no device: <reason>").
// Required as a module (test/device-suite-api.test.ts does, with a CPU fake of the addon), it runs
// nothing and exports apiCases and its results.
'use strict';
const path = require('node:path');
const fs = require('node:fs');

const root = path.join(__dirname, '..', '..');
const isMain = require.main === module;
const argv = isMain ? process.argv.slice(2) : [];
let quick = argv.includes('--quick');
const apiOnly = argv.includes('--api-only');
const jsonOut = argv.includes('--json') ? argv[argv.indexOf('--json') + 1] : null;

let cu = null, info = null;
if (isMain) {
  const { loadCuda } = require(path.join(root, 'dist', 'backends', 'cuda', 'binding.js'));
  const loaded = loadCuda();
  if (!loaded.binding) { console.log(`no device: ${loaded.reason}`); process.exit(3); }
  cu = loaded.binding;
  info = cu.deviceInfo();
  if (!info.available) { console.log(`no device: ${info.reason}`); process.exit(3); }
  console.log(`device: ${info.name} (sm_${info.computeCapability.replace('.', '')}), ${(info.memoryBytes / 2 ** 30).toFixed(1)} GiB`);
}

// ---- helpers -------------------------------------------------------------------------------------
const SENTINEL = 7;  // exact in every dtype
const GUARD = 67;    // elements after each buffer
const ELEM = { float32: 4, bfloat16: 2, float16: 2 };
const TOL = { exact: 1e-5, float32: 5e-3, bfloat16: 2e-2, float16: 5e-3 };
let seed = 12345;
function rand() { seed = (seed * 1103515245 + 12345) >>> 0; return (seed / 2 ** 32) * 2 - 1; }
function randArr(n, scale = 1) { const a = new Float32Array(n); for (let i = 0; i < n; ++i) a[i] = rand() * scale; return a; }

const results = { passed: 0, failed: 0, failures: [] };
function record(ok, name, detail) {
  if (ok) results.passed++;
  else { results.failed++; results.failures.push(`${name}: ${detail}`); console.log(`FAIL ${name}: ${detail}`); }
}

// A device region (rows, cols, ld) with a guard band after it; every element starts as SENTINEL.
const live = [];
function dev(dtype, rows, cols, ld = cols, data = null) {
  const span = (rows - 1) * ld + cols;
  const total = span + GUARD;
  const buf = cu.alloc(total * ELEM[dtype]);
  cu.fill({ buffer: buf, dtype, rows: 1, cols: total, value: SENTINEL });
  const d = { buf, dtype, rows, cols, ld, span, total };
  if (data) cu.upload({ buffer: buf, dtype, data, rows, cols, ld });
  live.push(d);
  return d;
}
function poison(d) { cu.fill({ buffer: d.buf, dtype: d.dtype, rows: d.rows, cols: d.cols, ld: d.ld, value: NaN }); }
function read(d) { return cu.download({ buffer: d.buf, dtype: d.dtype, rows: d.rows, cols: d.cols, ld: d.ld }); }
// Guard band and leading-dimension gaps still hold SENTINEL (skipGaps where a kernel owns them).
function guardOk(d, name, skipGaps = false) {
  const all = cu.download({ buffer: d.buf, dtype: d.dtype, rows: 1, cols: d.total });
  let bad = 0;
  for (let i = d.span; i < d.total; ++i) if (all[i] !== SENTINEL) bad++;
  if (!skipGaps) for (let r = 0; r < d.rows - 1; ++r) for (let c = d.cols; c < d.ld; ++c) if (all[r * d.ld + c] !== SENTINEL) bad++;
  record(bad === 0, `${name} guard`, `${bad} guard/gap elements overwritten`);
}
function freeAll() { while (live.length) live.pop().buf.dispose(); }

// ‖out − ref‖ / ‖ref‖, and no NaN.
function relErr(out, ref) {
  let num = 0, den = 0;
  for (let i = 0; i < ref.length; ++i) {
    if (!Number.isFinite(out[i])) return Infinity;
    num += (out[i] - ref[i]) ** 2; den += ref[i] ** 2;
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}
function check(name, out, ref, tol) {
  const e = relErr(out, ref);
  record(e <= tol, name, `relative error ${e.toExponential(2)} > ${tol}`);
  return e;
}

// float64 references
function matmul(M, N, K, a, lda, bAt /* (k, n) => value */) {
  const c = new Float64Array(M * N);
  for (let m = 0; m < M; ++m) for (let n = 0; n < N; ++n) {
    let s = 0;
    for (let k = 0; k < K; ++k) s += a[m * lda + k] * bAt(k, n);
    c[m * N + n] = s;
  }
  return c;
}

const SWEEP = quick ? [1, 7, 17, 65] : [1, 2, 3, 7, 8, 15, 16, 17, 63, 64, 65, 127, 129, 1000];
const RANKS = quick ? [1, 16] : [1, 2, 4, 8, 16, 64];
const MODES = [
  { dtype: 'float32', math: 'exact', tol: TOL.exact, label: 'fp32-exact' },
  { dtype: 'float32', math: 'tf32', tol: TOL.float32, label: 'tf32' },
  { dtype: 'bfloat16', math: 'tf32', tol: TOL.bfloat16, label: 'bf16' },
  { dtype: 'float16', math: 'tf32', tol: TOL.float16, label: 'fp16' },
];

// ---- GEMM ----------------------------------------------------------------------------------------
function gemmCase(mode, M, N, K, layout, ldPad, withBias, beta) {
  const { dtype, math } = mode;
  const lda = K + ldPad, ldb = (layout === 'nn' ? N : K) + ldPad, ldc = N + ldPad;
  const bRows = layout === 'nn' ? K : N, bCols = layout === 'nn' ? N : K;
  const A = dev(dtype, M, K, lda, randArr(M * K));
  const B = dev(dtype, bRows, bCols, ldb, randArr(bRows * bCols));
  const bias = withBias ? dev(dtype, 1, N, N, randArr(N)) : null;
  const C0 = randArr(M * N);
  const C = dev(dtype, M, N, ldc, C0);
  if (beta === 0) poison(C);
  const c0 = beta === 0 ? null : read(C);
  const a = read(A), b = read(B), bi = bias ? read(bias) : null;  // the inputs as rounded on the device
  cu.gemm({ dtype, math, bLayout: layout, M, N, K, alpha: 0.5, beta, A: A.buf, lda, B: B.buf, ldb, bias: bias?.buf, C: C.buf, ldc });
  const ref = matmul(M, N, K, a, K, layout === 'nn' ? (k, n) => b[k * N + n] : (k, n) => b[n * K + k]);
  for (let m = 0; m < M; ++m) for (let n = 0; n < N; ++n)
    ref[m * N + n] = 0.5 * ref[m * N + n] + (bi ? bi[n] : 0) + (beta ? beta * c0[m * N + n] : 0);
  const name = `gemm ${mode.label} ${layout} M=${M} N=${N} K=${K} ldpad=${ldPad}${withBias ? ' bias' : ''} beta=${beta}`;
  check(name, read(C), ref, mode.tol);
  guardOk(C, name);
  freeAll();
}

// ---- the LoRA layer --------------------------------------------------------------------------------
function loraCase(mode, M, I, O, r) {
  const { dtype, math, tol } = mode;
  const scaling = 16 / r / 2;
  const rp = cu.rankPad({ r }), ldx = I + rp, ldy = O + rp;
  const name = `lora ${mode.label} M=${M} I=${I} O=${O} r=${r}`;
  const x0 = randArr(M * I), W0 = randArr(O * I, 1 / Math.sqrt(I)), bias0 = randArr(O, 0.1);
  const A0 = randArr(I * r, 1 / Math.sqrt(I)), B0 = randArr(r * O, 0.5), dy0 = randArr(M * O);
  // fused operands
  const xExt = dev(dtype, M, ldx, ldx); poison(xExt);
  cu.upload({ buffer: xExt.buf, dtype, data: x0, rows: M, cols: I, ld: ldx });
  const wExt = dev(dtype, O + rp, ldx, ldx); poison(wExt);
  cu.upload({ buffer: wExt.buf, dtype, data: W0, rows: O, cols: I, ld: ldx });
  const A = dev('float32', I, r, r, A0), B = dev('float32', r, O, O, B0);
  cu.refreshWExt({ dtype, I, O, r, scaling, wExt: wExt.buf, A: A.buf, B: B.buf });
  const bias = dev(dtype, 1, O, O, bias0);
  const y = dev(dtype, M, O, O); poison(y);
  cu.loraForwardFused({ dtype, math, M, I, O, r, scaling, xExt: xExt.buf, wExt: wExt.buf, bias: bias.buf, A: A.buf, y: y.buf });
  const dyExt = dev(dtype, M, ldy, ldy); poison(dyExt);
  cu.upload({ buffer: dyExt.buf, dtype, data: dy0, rows: M, cols: O, ld: ldy });
  const dsWork = dev('float32', M, r), dA = dev('float32', I, r), dB = dev('float32', r, O), dx = dev(dtype, M, I);
  poison(dsWork); poison(dA); poison(dB); poison(dx);
  cu.loraBackwardFused({ dtype, math, M, I, O, r, scaling, xExt: xExt.buf, dyExt: dyExt.buf, wExt: wExt.buf, B: B.buf,
    dsWork: dsWork.buf, dA: dA.buf, dB: dB.buf, dx: dx.buf, accumulate: false });

  // float64 reference from the inputs as rounded on the device
  const xr = cu.download({ buffer: xExt.buf, dtype, rows: M, cols: I, ld: ldx });
  const Wr = cu.download({ buffer: wExt.buf, dtype, rows: O, cols: I, ld: ldx });
  const dyr = cu.download({ buffer: dyExt.buf, dtype, rows: M, cols: O, ld: ldy });
  const br = read(bias);
  const s = matmul(M, r, I, xr, I, (k, n) => A0[k * r + n]);
  const yRef = matmul(M, O, I, xr, I, (k, n) => Wr[n * I + k]);
  const sB = matmul(M, O, r, s, r, (k, n) => B0[k * O + n]);
  for (let m = 0; m < M; ++m) for (let o = 0; o < O; ++o) yRef[m * O + o] += br[o] + scaling * sB[m * O + o];
  const ds = matmul(M, r, O, dyr, O, (k, n) => scaling * B0[n * O + k]);
  const dBRef = new Float64Array(r * O);
  for (let m = 0; m < M; ++m) for (let j = 0; j < r; ++j) for (let o = 0; o < O; ++o) dBRef[j * O + o] += scaling * s[m * r + j] * dyr[m * O + o];
  const dARef = new Float64Array(I * r);
  for (let m = 0; m < M; ++m) for (let i = 0; i < I; ++i) for (let j = 0; j < r; ++j) dARef[i * r + j] += xr[m * I + i] * ds[m * r + j];
  const dxRef = matmul(M, I, O, dyr, O, (k, n) => Wr[k * I + n]);
  const dsA = matmul(M, I, r, ds, r, (k, n) => A0[n * r + k]);
  for (let e = 0; e < M * I; ++e) dxRef[e] += dsA[e];

  const yF = read(y), dxF = read(dx), dAF = read(dA), dBF = read(dB);
  check(`${name} fused y`, yF, yRef, tol);
  check(`${name} fused s (x_ext padding)`, readPad(xExt, I, r), s, tol);
  check(`${name} fused ds (dy_ext padding)`, readPad(dyExt, O, r), ds, tol);
  check(`${name} fused dx`, dxF, dxRef, tol);
  check(`${name} fused dA`, dAF, dARef, tol);
  check(`${name} fused dB`, dBF, dBRef, tol);
  for (const [d, n] of [[y, 'y'], [dx, 'dx'], [dA, 'dA'], [dB, 'dB'], [dsWork, 'dsWork']]) guardOk(d, `${name} ${n}`);
  guardOk(xExt, `${name} xExt`, true);
  guardOk(dyExt, `${name} dyExt`, true);

  // the unfused path (PEFT's order) on the same inputs
  const xU = dev(dtype, M, I, I, x0), WU = dev(dtype, O, I, I, W0);
  const At = dev(dtype, I, r), Bt = dev(dtype, r, O);
  cu.cast({ dst: At.buf, dstDtype: dtype, src: A.buf, srcDtype: 'float32', rows: I, cols: r });
  cu.cast({ dst: Bt.buf, dstDtype: dtype, src: B.buf, srcDtype: 'float32', rows: r, cols: O });
  const sU = dev(dtype, M, r), u = dev(dtype, M, O), yU = dev(dtype, M, O); poison(sU); poison(u); poison(yU);
  cu.loraForwardUnfused({ dtype, math, M, I, O, r, scaling, x: xU.buf, W: WU.buf, bias: bias.buf, A: At.buf, B: Bt.buf, s: sU.buf, u: u.buf, y: yU.buf });
  const dyU = dev(dtype, M, O, O, dy0), du = dev(dtype, M, O), dsU = dev(dtype, M, r);
  const dAU = dev('float32', I, r), dBU = dev('float32', r, O), dxU = dev(dtype, M, I);
  poison(du); poison(dsU); poison(dAU); poison(dBU); poison(dxU);
  cu.loraBackwardUnfused({ dtype, math, M, I, O, r, scaling, x: xU.buf, s: sU.buf, dy: dyU.buf, W: WU.buf, A: At.buf, B: Bt.buf,
    du: du.buf, ds: dsU.buf, dA: dAU.buf, dB: dBU.buf, dx: dxU.buf, accumulate: false });
  const yUF = read(yU), dxUF = read(dxU);
  check(`${name} unfused y`, yUF, yRef, tol);
  check(`${name} unfused dx`, dxUF, dxRef, tol);
  check(`${name} unfused dA`, read(dAU), dARef, 2 * tol);
  check(`${name} unfused dB`, read(dBU), dBRef, tol);
  check(`${name} fused = unfused (y)`, yF, Float64Array.from(yUF), 2 * tol);
  check(`${name} fused = unfused (dx)`, dxF, Float64Array.from(dxUF), 2 * tol);
  for (const [d, n] of [[yU, 'y'], [dxU, 'dx'], [dAU, 'dA'], [dBU, 'dB'], [sU, 's'], [u, 'u'], [du, 'du'], [dsU, 'ds']]) guardOk(d, `${name} unfused ${n}`);

  // accumulate: a second backward adds to dA and dB
  cu.loraBackwardFused({ dtype, math, M, I, O, r, scaling, xExt: xExt.buf, dyExt: dyExt.buf, wExt: wExt.buf, B: B.buf,
    dsWork: dsWork.buf, dA: dA.buf, dB: dB.buf, dx: null, accumulate: true });
  check(`${name} accumulate dA`, read(dA), dARef.map((v) => 2 * v), tol);
  freeAll();
}
function readPad(d, width, r) {
  const all = cu.download({ buffer: d.buf, dtype: d.dtype, rows: d.rows, cols: d.ld, ld: d.ld });
  const out = new Float32Array(d.rows * r);
  for (let m = 0; m < d.rows; ++m) for (let j = 0; j < r; ++j) out[m * r + j] = all[m * d.ld + width + j];
  return out;
}

// ---- small ops -------------------------------------------------------------------------------------
function smallOps(mode) {
  const { dtype, tol } = mode;
  // casts: f32 → dtype → f32 round trip against the dtype's rounding (relative 2^-8 for bf16)
  const n = 1000, v = randArr(n, 3);
  const src = dev('float32', 1, n, n, v), mid = dev(dtype, 1, n), back = dev('float32', 1, n);
  cu.cast({ dst: mid.buf, dstDtype: dtype, src: src.buf, srcDtype: 'float32', rows: 1, cols: n });
  cu.cast({ dst: back.buf, dstDtype: 'float32', src: mid.buf, srcDtype: dtype, rows: 1, cols: n });
  check(`cast ${mode.label} round trip`, read(back), Float64Array.from(v), dtype === 'bfloat16' ? 4e-3 : dtype === 'float16' ? 1e-3 : 0);
  guardOk(mid, `cast ${mode.label}`);
  // MSE
  const p0 = randArr(n), t0 = randArr(n);
  const p = dev(dtype, 1, n, n, p0), t = dev(dtype, 1, n, n, t0), loss = dev('float32', 1, 1), dp = dev(dtype, 1, n);
  poison(dp);
  cu.mseLoss({ dtype, n, pred: p.buf, target: t.buf, loss: loss.buf, dpred: dp.buf });
  const pr = read(p), tr = read(t);
  let l = 0; const g = new Float64Array(n);
  for (let i = 0; i < n; ++i) { const d = pr[i] - tr[i]; l += d * d / n; g[i] = 2 * d / n; }
  check(`mse ${mode.label} loss`, read(loss), [l], 1e-5);
  check(`mse ${mode.label} grad`, read(dp), g, tol);
  guardOk(dp, `mse ${mode.label} grad`);
  // cross-entropy
  for (const [N, C] of [[1, 1], [7, 17], [65, 1000]]) {
    const lg0 = randArr(N * C, 4);
    const labels = Int32Array.from({ length: N }, (_, i) => (i * 7919) % C);
    const lg = dev(dtype, N, C, C + 3, lg0), lab = cu.alloc(4 * N), ls = dev('float32', 1, 1), dl = dev(dtype, N, C, C + 3);
    cu.upload({ buffer: lab, dtype: 'int32', data: labels });
    poison(dl);
    cu.crossEntropyLoss({ dtype, N, C, logits: lg.buf, ld: C + 3, labels: lab, loss: ls.buf, dlogits: dl.buf, ldd: C + 3 });
    const x = read(lg);
    let L = 0; const G = new Float64Array(N * C);
    for (let i = 0; i < N; ++i) {
      let mx = -Infinity; for (let c = 0; c < C; ++c) mx = Math.max(mx, x[i * C + c]);
      let se = 0; for (let c = 0; c < C; ++c) se += Math.exp(x[i * C + c] - mx);
      L += (Math.log(se) + mx - x[i * C + labels[i]]) / N;
      for (let c = 0; c < C; ++c) G[i * C + c] = (Math.exp(x[i * C + c] - mx) / se - (c === labels[i] ? 1 : 0)) / N;
    }
    check(`cross-entropy ${mode.label} N=${N} C=${C} loss`, read(ls), [L], 1e-4);
    check(`cross-entropy ${mode.label} N=${N} C=${C} grad`, read(dl), G, Math.max(tol, 1e-4));
    guardOk(dl, `cross-entropy ${mode.label} grad`);
    lab.dispose();
  }
  freeAll();
}

function adamwCase() {
  const n = 4099;
  const p0 = randArr(n), g0 = randArr(n), m0 = randArr(n, 0.1), v0 = randArr(n, 0.1).map(Math.abs);
  const p = dev('float32', 1, n, n, p0), g = dev('float32', 1, n, n, g0), m = dev('float32', 1, n, n, m0), v = dev('float32', 1, n, n, v0);
  const lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1, step = 3;
  cu.adamw({ n, param: p.buf, grad: g.buf, m: m.buf, v: v.buf, lr, beta1: b1, beta2: b2, eps, weightDecay: wd, step });
  const pr = new Float64Array(n);
  for (let i = 0; i < n; ++i) {
    const mi = b1 * m0[i] + (1 - b1) * g0[i], vi = b2 * v0[i] + (1 - b2) * g0[i] ** 2;
    pr[i] = p0[i] * (1 - lr * wd) - lr * (mi / (1 - b1 ** step)) / (Math.sqrt(vi / (1 - b2 ** step)) + eps);
  }
  check('adamw', read(p), pr, 1e-6);
  guardOk(p, 'adamw param');
  freeAll();
}

// ---- the public API on the device --------------------------------------------------------------------
// Each case builds the same LinearLoRA twice, on 'cuda' and on the CPU, from the values as rounded on
// the device, and compares forward, backward, the gradients, an AdamW step (then a forward, which must
// see the refreshed W_ext), a loss, and merge; fused and unfused agree with each other.
async function apiCases(api, binding = cu, options = {}) {
  const cu = binding;
  if (options.quick) quick = true;
  const { tensor, Linear, LinearLoRA, AdamW, mseLoss, crossEntropyLoss } = api;
  const live0 = cu.memoryStats().allocatedBytes;
  const shapes = quick ? [[7, 33, 17, 4]] : [[1, 64, 48, 16], [33, 72, 40, 8], [130, 257, 129, 16], [17, 1000, 64, 64]];
  const expectCode = (name, code, fn) => {
    let got = null;
    try { fn(); } catch (e) { got = e.code; }
    record(got === code, name, `expected ${code}, got ${got}`);
  };
  for (const mode of MODES) {
    const { dtype, math, tol, label } = mode;
    for (const [M, I, O, r] of shapes) {
      const W0 = randArr(O * I, 1 / Math.sqrt(I)), b0 = randArr(O, 0.1), A0 = randArr(I * r, 1 / Math.sqrt(I)), B0 = randArr(r * O, 0.2);
      const x0 = randArr(M * I), dy0 = randArr(M * O), t0 = randArr(M * O);
      const x = tensor(x0, [M, I], { device: 'cuda', dtype }), dy = tensor(dy0, [M, O], { device: 'cuda', dtype });
      const target = tensor(t0, [M, O], { device: 'cuda', dtype });
      const base = new Linear(I, O, { weight: W0, bias: b0, device: 'cuda', dtype, math });
      const cpuBase = new Linear(I, O, { weight: base.weight.dataSync(), bias: base.bias.dataSync() });
      const xr = x.dataSync(), dyr = dy.dataSync(), tr = target.dataSync();
      const ys = {};
      for (const fused of [true, false]) {
        const name = `api ${label} ${fused ? 'fused' : 'unfused'} M=${M} I=${I} O=${O} r=${r}`;
        const opts = { alpha: 2 * r, A: A0, B: B0, fused };
        const dev = new LinearLoRA(base, r, opts), cpu = new LinearLoRA(cpuBase, r, opts);
        const y = dev.forward(x), yc = cpu.forward(xr);
        record(y.device === 'cuda' && y.dtype === dtype, `${name} y placement`, `${y.device} ${y.dtype}`);
        check(`${name} forward`, y.dataSync(), Float64Array.from(yc.dataSync()), tol);
        ys[fused] = y.dataSync();
        const dx = dev.backward(dy), dxc = cpu.backward(dyr);
        check(`${name} dx`, dx.dataSync(), Float64Array.from(dxc.dataSync()), tol);
        check(`${name} dA`, dev.lora.A.grad.dataSync(), Float64Array.from(cpu.lora.A.grad.dataSync()), 2 * tol);
        check(`${name} dB`, dev.lora.B.grad.dataSync(), Float64Array.from(cpu.lora.B.grad.dataSync()), 2 * tol);
        // One AdamW step each, the CPU one on the device's gradients (Adam's first step is close to
        // lr·sign(g), so tiny gradient differences would flip elements): this checks the device kernel
        // and that the next forward sees the stepped A and B through the refreshed W_ext.
        cpu.lora.A.grad.buffer().set(dev.lora.A.grad.dataSync());
        cpu.lora.B.grad.buffer().set(dev.lora.B.grad.dataSync());
        const od = new AdamW(dev.parameters(), { lr: 0.05, weightDecay: 0.01 }), oc = new AdamW(cpu.parameters(), { lr: 0.05, weightDecay: 0.01 });
        od.step(); oc.step();
        check(`${name} AdamW A`, dev.lora.A.dataSync(), Float64Array.from(cpu.lora.A.dataSync()), 1e-5);
        check(`${name} AdamW B`, dev.lora.B.dataSync(), Float64Array.from(cpu.lora.B.dataSync()), 1e-5);
        const y2 = dev.forward(x), y2c = cpu.forward(xr);
        check(`${name} forward after the step (W_ext refreshed)`, y2.dataSync(), Float64Array.from(y2c.dataSync()), tol);
        const ld = mseLoss(y2, target), lc = mseLoss(y2c, tr);
        record(Math.abs(ld.loss - lc.loss) <= 2 * tol * Math.abs(lc.loss), `${name} mseLoss`, `${ld.loss} vs ${lc.loss}`);
        check(`${name} mseLoss grad`, ld.grad.dataSync(), Float64Array.from(lc.grad.dataSync()), 2 * tol);
        dev.merge(); cpu.merge();
        const ym = dev.forward(x);
        check(`${name} merged forward`, ym.dataSync(), Float64Array.from(cpu.forward(xr).dataSync()), 2 * tol);
        dev.unmerge(); cpu.unmerge();
        for (const t of [y, dx, y2, ld.grad, ym]) t.dispose();
        od.dispose(); dev.dispose();
      }
      check(`api ${label} fused = unfused M=${M} I=${I} O=${O} r=${r}`, ys.true, Float64Array.from(ys.false), 2 * tol);
      // the async twins, and cross-entropy over the outputs as logits
      const layer = new LinearLoRA(base, r, { alpha: 2 * r, A: A0, B: B0 });
      const ya = await layer.forwardAsync(x), ys2 = layer.forward(x);
      check(`api ${label} forwardAsync = forward M=${M}`, ya.dataSync(), Float64Array.from(ys2.dataSync()), 0);
      const labels = Int32Array.from({ length: M }, (_, i) => (i * 7) % O);
      const ce = crossEntropyLoss(ya, labels), cec = crossEntropyLoss(ya.dataSync(), labels);
      record(Math.abs(ce.loss - cec.loss) <= 1e-4 * Math.max(1, Math.abs(cec.loss)), `api ${label} crossEntropyLoss M=${M}`, `${ce.loss} vs ${cec.loss}`);
      check(`api ${label} crossEntropyLoss grad M=${M}`, ce.grad.dataSync(), Float64Array.from(cec.grad.dataSync()), Math.max(tol, 1e-4));
      expectCode(`api ${label} cpu x into a cuda layer`, 'ERR_DEVICE', () => layer.forward(tensor(x0, [M, I])));
      expectCode(`api ${label} cuda x into a cpu layer`, 'ERR_DEVICE', () => new LinearLoRA(cpuBase, r).forward(x));
      // Many adapters on the base: mixed ranks, rows interleaved with frozen-only ones, against the CPU layer.
      if (api.MultiLoRALinear) {
        const adapters = { p: { rank: r, alpha: 2 * r, A: A0, B: B0 }, q: { rank: r + 5, rslora: true, seed: 3, B: randArr((r + 5) * O, 0.2) }, s: { rank: 1, seed: 4, B: randArr(O, 0.2) } };
        const names = Array.from({ length: M }, (_, m) => ['q', 'p', '__base__', 's'][m % 4]);
        const mdev = new api.MultiLoRALinear(base, { adapters }), mcpu = new api.MultiLoRALinear(cpuBase, { adapters });
        const name = `api ${label} MultiLoRALinear M=${M} I=${I} O=${O} ranks ${r},${r + 5},1`;
        const my = mdev.forward(x, { adapterNames: names }), mdx = mdev.backward(dy);
        check(`${name} forward`, my.dataSync(), Float64Array.from(mcpu.forward(xr, { adapterNames: names }).dataSync()), tol);
        check(`${name} dx`, mdx.dataSync(), Float64Array.from(mcpu.backward(dyr).dataSync()), tol);
        for (const n of ['p', 'q', 's']) {
          check(`${name} ${n} dA`, mdev.adapter(n).A.grad.dataSync(), Float64Array.from(mcpu.adapter(n).A.grad.dataSync()), 2 * tol);
          check(`${name} ${n} dB`, mdev.adapter(n).B.grad.dataSync(), Float64Array.from(mcpu.adapter(n).B.grad.dataSync()), 2 * tol);
        }
        for (const t of [my, mdx]) t.dispose();
        mdev.dispose();
      }
      // .to() round trips
      const back = x.to('cpu').to('cuda', { dtype });
      check(`api ${label} .to() round trip`, back.dataSync(), Float64Array.from(xr), 0);
      for (const t of [ya, ys2, ce.grad, back, x, dy, target, base.weight, base.bias]) t.dispose();
      layer.dispose();
    }
  }
  cu.synchronize();
  const live = cu.memoryStats().allocatedBytes;
  record(live === live0, 'api: every device byte given back after dispose()', `${live - live0} bytes still allocated`);
}

// ---- run -------------------------------------------------------------------------------------------
if (!isMain) {
  module.exports = { apiCases, results };
  return;
}
const t0 = Date.now();
if (!apiOnly) adamwCase();
for (const mode of apiOnly ? [] : MODES) {
  smallOps(mode);
  const S = SWEEP;
  for (let i = 0; i < S.length; ++i) {
    const M = S[i], N = S[(i + 5) % S.length], K = S[(i + 9) % S.length];
    for (const layout of ['nt', 'nn']) {
      gemmCase(mode, M, N, K, layout, i % 2 === 0 ? 0 : 3, i % 3 === 0, i % 4 === 1 ? 1 : 0);
      gemmCase(mode, N, K, M, layout, 8, true, 0);
    }
  }
  const loraShapes = quick
    ? [[1, 7, 17, 1], [17, 65, 7, 16]]
    : [[1, 1, 1, 1], [2, 7, 3, 2], [7, 15, 17, 4], [17, 63, 65, 8], [65, 129, 127, 16], [129, 64, 1000, 64],
       [1000, 127, 63, 1], [3, 1000, 16, 16], [8, 16, 8, 64], [64, 128, 256, 16]];
  for (const [M, I, O, r0] of loraShapes) for (const r of quick ? [r0] : [r0]) loraCase(mode, M, I, O, r);
  if (!quick) for (const r of RANKS) loraCase(mode, 33, 72, 40, r);
  console.log(`${mode.label}: ${results.passed} passed, ${results.failed} failed so far (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}
cu.synchronize();
(async () => {
  let api = null;
  try {
    api = require(path.join(root, 'dist', 'index.js'));
  } catch (e) {
    record(false, 'api: load dist/index.js (needs build/Release/fused_lora.node too)', e.message);
  }
  if (api) {
    const ta = Date.now();
    try {
      await apiCases(api);
    } catch (e) {
      record(false, 'api: a check threw', `${e.code ?? ''} ${e.stack}`);
    }
    console.log(`api: ${results.passed} passed, ${results.failed} failed so far (${((Date.now() - ta) / 1000).toFixed(1)} s)`);
  }
  const stats = cu.memoryStats();
  console.log(`device suite: ${results.passed} passed, ${results.failed} failed; allocator ${JSON.stringify(stats)}`);
  if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify({ gpu: info.name, quick, apiOnly, ...results }, null, 2));
  process.exit(results.failed === 0 ? 0 : 1);
})();
