// The numerics suite on OpenBLAS. CI installs libopenblas-dev (.ci/run) and must run it; elsewhere,
// without OpenBLAS, the suite is skipped with the reason rather than failed.
import { it } from 'vitest';

process.env.FUSED_LORA_BLAS = 'openblas';
const { backendInfo } = await import('../lib/index');
const { defineNumerics } = await import('./numerics');
const info = backendInfo().cpu;
if (info.blas === 'openblas' || process.env.CI) {
  defineNumerics('openblas');
} else {
  it.skip(`OpenBLAS numerics: skipped, OpenBLAS is not installed here (${info.reason})`, () => {});
}
