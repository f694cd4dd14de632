// The numerics suite on the built-in GEMM. The BLAS is chosen on first use, so setting the variable
// here, before any kernel runs in this worker, is enough; the suite's first test checks it took.
process.env.FUSED_LORA_BLAS = 'builtin';
const { defineNumerics } = await import('./numerics');
defineNumerics('builtin');
