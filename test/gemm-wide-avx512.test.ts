// The GEMM at real widths on the built-in avx512 kernels (see test/gemm-wide.ts). The ISA is read
// once, when the addon loads, so setting it here, before the first import, is enough.
process.env.FUSED_LORA_ISA = 'avx512';
process.env.FUSED_LORA_BLAS = 'builtin';
const { defineBuiltinWide } = await import('./gemm-wide');
defineBuiltinWide('avx512');
