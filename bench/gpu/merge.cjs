#!/usr/bin/env node
// Joins the device suite's result, our timings and the peers' into one results file:
//   node bench/gpu/merge.cjs OUTDIR COMMAND  → OUTDIR/<date>-h200.json
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const [dir, command] = process.argv.slice(2);
const read = (f) => { try { return JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')); } catch { return null; } };
const suite = read('suite.json'), ours = read('ours.json'), peer = read('peer.json');
const commit = process.env.FUSED_LORA_COMMIT || (() => { try { return fs.readFileSync('.device/commit', 'utf8').trim(); } catch { return 'unknown'; } })();
const I = 4096, O = 4096, r = 16;
const benchmarks = [];
for (const o of ours?.rows ?? []) {
  const p = (peer?.rows ?? []).find((q) => q.M === o.M) ?? {};
  const shape = { M: o.M, I, O, r };
  const flFwd = 2 * o.M * I * O + 2 * o.M * (I + O) * r;
  const tf = (ms, fl) => (ms ? fl / ms / 1e9 : null);
  benchmarks.push({ op: 'gemm x·Wᵀ', shape: { M: o.M, N: O, K: I }, dtype: 'bfloat16',
    ms: { ours: o.gemm_ms, cublas: p.cublas_gemm_ms ?? null },
    tflops: { ours: tf(o.gemm_ms, 2 * o.M * I * O), cublas: tf(p.cublas_gemm_ms, 2 * o.M * I * O) },
    ratio_ours_over_cublas_tflops: p.cublas_gemm_ms ? p.cublas_gemm_ms / o.gemm_ms : null });
  benchmarks.push({ op: 'lora forward', shape, dtype: 'bfloat16',
    ms: { fused: o.fwd_fused_ms, unfused: o.fwd_unfused_ms, cublas_gemm_alone: p.cublas_gemm_ms ?? null, peft: p.peft_fwd_ms ?? null },
    tflops: { fused: tf(o.fwd_fused_ms, flFwd), peft: tf(p.peft_fwd_ms, flFwd) },
    gbps: { fused: (2 * (o.M * I + I * O + o.M * O)) / o.fwd_fused_ms / 1e6 },
    speedup_fused_over_peft: p.peft_fwd_ms ? p.peft_fwd_ms / o.fwd_fused_ms : null });
  benchmarks.push({ op: 'lora training step (fwd + bwd with dx + AdamW)', shape, dtype: 'bfloat16',
    ms: { fused: o.train_fused_ms, unfused: o.train_unfused_ms, cublas_gemms_alone: p.cublas_train_ms ?? null, peft: p.peft_train_ms ?? null },
    tflops: { fused: tf(o.train_fused_ms, 2 * flFwd), peft: tf(p.peft_train_ms, 2 * flFwd) },
    speedup_fused_over_peft: p.peft_train_ms ? p.peft_train_ms / o.train_fused_ms : null });
}
const gpu = suite?.gpu ?? peer?.gpu ?? 'unknown';
const date = new Date().toISOString().slice(0, 10);
const out = {
  gpu, commit, command, date, torch: peer?.torch ?? null, peft: peer?.peft ?? null,
  correctness: { passed: suite?.passed ?? 0, failed: suite?.failed ?? null, failures: (suite?.failures ?? []).slice(0, 50) },
  sanitizer: read('sanitizer.json'),
  benchmarks,
};
const file = path.join(dir, `${date}-h200.json`);
fs.writeFileSync(file, JSON.stringify(out, null, 2));
console.log(`wrote ${file}`);
