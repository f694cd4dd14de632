// MultiLoRALinear against float64 on the built-in generic kernels (test/multi-lora-check.ts), skipped
// where the CPU lacks them. The ISA is read once, when the addon loads, so setting it here, before
// the first import, is enough.
process.env.FUSED_LORA_ISA = 'generic';
process.env.FUSED_LORA_BLAS = 'builtin';
const { describe, expect, it } = await import('vitest');
const { native } = await import('../lib/backends/cpu/binding');
const { checkCase, numericsCases } = await import('./multi-lora-check');

const table = native.builtinKernels();
describe.skipIf(table.isa !== 'generic')(`MultiLoRALinear on the built-in generic kernels (this CPU: ${table.isa})`, () => {
  it('runs the generic GEMM and rank-r kernels, with no BLAS', () => {
    expect(table.isa).toBe('generic');
    expect(table.lora.rankRIsa).toBe('generic');
    expect(native.backendInfo().blas.name).toBe('builtin');
  });
  it.each(numericsCases())('%s', (_label, c) => checkCase(c));
});
