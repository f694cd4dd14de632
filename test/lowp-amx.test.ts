// The reduced-precision frozen GEMM on the AMX-BF16 tile kernel (see test/lowp-kernels.ts). The ISA is
// read once, when the addon loads, so setting it here, before the first import, is enough.
process.env.FUSED_LORA_ISA = 'amx';
process.env.FUSED_LORA_BLAS = 'builtin';
const { defineLowpSuites } = await import('./lowp-kernels');
defineLowpSuites('amx');
