// The GEMM at real widths on the BLAS (see test/gemm-wide.ts). CI installs OpenBLAS and must run it.
process.env.FUSED_LORA_BLAS = 'openblas';
const { defineBlasWide } = await import('./gemm-wide');
defineBlasWide();
