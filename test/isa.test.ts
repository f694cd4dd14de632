// FUSED_LORA_ISA: one run-time choice of instruction set for every built-in kernel, read once when
// the addon loads. Each case is a fresh process (the choice is per process), so this file can force
// every value without disturbing the rest of the suite.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { native } from '../lib/backends/cpu/binding';

const ROOT = path.join(__dirname, '..');
const RANK = { generic: 0, avx2: 1, avx512: 2 } as const;
type Isa = keyof typeof RANK;
const BEST = native.builtinKernels().best;

/** Loads the package with FUSED_LORA_ISA = value in a child and returns what it reports, or its load error. */
function loadWith(value: string | undefined): { kernel: string; reason: string; table: string; rankR: string } | { error: { name: string; code: string; message: string } } {
  const env = { ...process.env };
  delete env.FUSED_LORA_ISA;
  if (value !== undefined) env.FUSED_LORA_ISA = value;
  const script = `
    let out;
    try {
      const lib = require(${JSON.stringify(path.join(ROOT, 'dist', 'index.js'))});
      const { native } = require(${JSON.stringify(path.join(ROOT, 'dist', 'backends', 'cpu', 'binding.js'))});
      const cpu = lib.backendInfo().cpu, t = native.builtinKernels();
      out = { kernel: cpu.builtinKernel, reason: cpu.builtinKernelReason, table: t.isa, rankR: t.lora.rankRIsa };
    } catch (e) {
      out = { error: { name: e.name, code: e.code, message: e.message } };
    }
    process.stdout.write(JSON.stringify(out));`;
  const r = spawnSync(process.execPath, ['-e', script], { env, encoding: 'utf8', timeout: 60_000 });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

describe('FUSED_LORA_ISA', () => {
  it(`unset or empty: every kernel runs the best this CPU supports (${BEST})`, () => {
    for (const value of [undefined, '']) {
      expect(loadWith(value)).toEqual({ kernel: BEST, reason: `the best this CPU supports (${BEST})`, table: BEST, rankR: BEST });
    }
  });

  it.each(Object.keys(RANK) as Isa[])('=%s caps the GEMM, GEMV, dot and rank-r kernels together, never above the CPU', (want) => {
    const runs: Isa = RANK[want] <= RANK[BEST] ? want : BEST;
    const got = loadWith(want);
    expect(got).toMatchObject({ kernel: runs, table: runs, rankR: runs });
    expect((got as { reason: string }).reason).toBe(
      runs === want ? `FUSED_LORA_ISA=${want}` : `FUSED_LORA_ISA=${want} capped to ${BEST}, the best this CPU supports`,
    );
  });

  it.each(['avx-512', 'AVX2', 'sse2', 'auto', ' avx2'])('=%j is refused at load with ERR_ARGUMENT naming the accepted values', (value) => {
    expect(loadWith(value)).toEqual({
      error: {
        name: 'LoraError',
        code: 'ERR_ARGUMENT',
        message: `fused-lora: expected amx, avx512bf16, avx512, avx2 or generic (or unset) for FUSED_LORA_ISA but received '${value}'`,
      },
    });
  });
});
