// MultiLoRALinear against float64 on the built-in avx512 kernels (test/multi-lora-check.ts), skipped
// where the CPU lacks them. The ISA is read once, when the addon loads, so setting it here, before
// the first import, is enough.
process.env.FUSED_LORA_ISA = 'avx512';
process.env.FUSED_LORA_BLAS = 'builtin';
const { describe, expect, it } = await import('vitest');
const { native } = await import('../lib/backends/cpu/binding');
const { checkCase, numericsCases } = await import('./multi-lora-check');

const table = native.builtinKernels();
describe.skipIf(table.isa !== 'avx512')(`MultiLoRALinear on the built-in avx512 kernels (this CPU: ${table.isa})`, () => {
  it('runs the avx512 GEMM and rank-r kernels, with no BLAS', () => {
    expect(table.isa).toBe('avx512');
    expect(table.lora.rankRIsa).toBe('avx512');
    expect(native.backendInfo().blas.name).toBe('builtin');
  });
  it.each(numericsCases())('%s', (_label, c) => checkCase(c));
});
