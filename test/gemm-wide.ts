// The GEMM at real model widths, differential against float64, once per ISA of the built-in kernels
// (test/gemm-wide-<isa>.test.ts, each a process with FUSED_LORA_ISA set) and once on the BLAS
// (test/gemm-wide-blas.test.ts: the backend LinearLoRA routes its frozen GEMMs to from M = 9).
//
// Why the older sweep missed the NC overflow (the 8×48 and 4×24 kernels packed round_up(NC, NR) =
// 4128 columns into a 4096-column buffer on every output wider than 4080): its sizes stopped at
// 1000, below one N panel of any kernel; its only wide case (M = 1, 4096×4096) is a GEMV, which
// never packs, and the other (16×2048) stays inside one panel; the fuzzers and the sanitizer run
// drew dimensions under 300; and where the overflow did happen (the r×O gradients beside OpenBLAS)
// it mostly landed inside a thread_local buffer grown earlier by a larger call, memory that
// AddressSanitizer counts as valid. Here the sizes come from the kernel table (every MC, NC, KC
// ± 1 and past the second block), the widths from real layers (768 to 12,288, and up to 20,000 at
// random), and every pack is bounds-checked in the sanitizer build (FL_DCHECK).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { native } from '../lib/backends/cpu/binding';
import { backendInfo, setNumThreads } from '../lib/index';
import { Backend, expectClean } from './gemm-check';
import { batch, checkLora, loraPathCases, makeLayer, README_LAYER, VARIANTS } from './lora-wide';
import { blockingTags, boundaryCases, frozenCases, MODEL_LAYERS, MODEL_RANKS, randomCases, rankCases, REQUIRED_TAGS, threadedCases } from './gemm-shapes';

const SCALE = Number(process.env.FUZZ_SCALE ?? 1);
const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed);
const RANDOM_CASES = Math.round(6 * SCALE);

function shapeSuites(backend: Backend) {
  describe.each(MODEL_LAYERS.map((l, i) => [...l, i] as const))('%s (I=%i, O=%i)', (_name, _I, _O, layer) => {
    it('the frozen product x·Wᵀ / dy·W, all four transpose cases', () => {
      for (const c of frozenCases(layer)) expectClean(c, backend);
    });
    it(`the rank-r products of a step, r in {${MODEL_RANKS.join(', ')}}`, () => {
      for (const r of MODEL_RANKS) for (const c of rankCases(layer, r)) expectClean(c, backend);
    });
  });

  it(`${RANDOM_CASES} random shapes (M <= 64, N and K up to 20,000; FUZZ_SEED=${SEED})`, () => {
    for (const c of randomCases(RANDOM_CASES, SEED)) expectClean(c, backend);
  });
}

/** The built-in GEMM on `isa` (skipped where the CPU lacks it), with FUSED_LORA_ISA already set. */
export function defineBuiltinWide(isa: 'avx512' | 'avx2' | 'generic'): void {
  const table = native.builtinKernels();
  if (table.isa !== isa) {
    it.skip(`built-in GEMM on ${isa}: skipped, this CPU runs ${table.isa} (${table.reason})`, () => {});
    return;
  }
  describe(`built-in GEMM on ${isa}, float64-checked at real widths`, () => {
    it(`runs the ${isa} kernels, as FUSED_LORA_ISA asked`, () => {
      expect(backendInfo().cpu.builtinKernel).toBe(isa);
    });

    describe('every blocking boundary of the kernel table, one thread', () => {
      const threads = native.builtinKernels().threads;
      beforeAll(() => setNumThreads(1));
      afterAll(() => setNumThreads(threads));

      const { cases, excused } = boundaryCases(table);
      it(`${cases.length} cases: MC, NC, KC of each of the ${table.kernels.length} kernels ± 1, the dot path's limits, GEMVs`, () => {
        const seen = table.kernels.map(() => new Set<string>());
        for (const c of cases) {
          const o = expectClean(c, 'builtin');
          if (o.plan.path === 'blocked') for (const tag of blockingTags(c, o.plan, table.kernels[o.plan.kernel])) seen[o.plan.kernel].add(tag);
        }
        // The sweep must really reach every boundary of every kernel: a table change that moves one
        // out of reach fails here, not silently. Only what the plan never selects is excused, and
        // never for the default kernel.
        expect(excused[0]).toEqual([]);
        table.kernels.forEach((k, i) => {
          const missing = REQUIRED_TAGS.filter((tag) => !seen[i].has(tag) && !excused[i].includes(tag));
          expect(missing, `kernel ${k.mr}x${k.nr} (MC=${k.mc}, KC=${k.kc}, NC=${k.nc}) never saw`).toEqual([]);
        });
        const paths = new Set(cases.map((c) => native.gemmPlan({ transA: c.ta, transB: c.tb, M: c.M, N: c.N, K: c.K }).path));
        expect([...paths].sort()).toEqual(table.dot ? ['blocked', 'dot', 'gemv-cols', 'gemv-multi', 'gemv-rows'] : ['blocked', 'gemv-cols', 'gemv-multi', 'gemv-rows']);
      });
    });

    describe('thread splits on either side of the thresholds, three threads', () => {
      const threads = native.builtinKernels().threads;
      beforeAll(() => setNumThreads(3));
      afterAll(() => setNumThreads(threads));
      it('uneven M and N grids, split GEMVs, and the shapes just below the split', () => {
        const seen = new Set<string>();
        for (const c of threadedCases(table, 3)) {
          const p = expectClean(c, 'builtin').plan;
          seen.add(`${p.path} on ${p.threads}`);
          if (p.path === 'blocked' && p.threads > 1) seen.add(`blocked split ${p.tm > 1 ? 'M' : 'N'}`);
        }
        const want = ['blocked', 'gemv-rows', 'gemv-cols', 'gemv-multi', ...(table.dot ? ['dot'] : [])].flatMap((path) => [1, 2, 3].map((n) => `${path} on ${n}`));
        expect(want.filter((w) => !seen.has(w))).toEqual([]);
        expect(seen.has('blocked split M') && seen.has('blocked split N')).toBe(true);
      });
    });

    // The rank-r products and GEMVs follow the same ISA choice; the LoRA kernels reach them.
    describe('the LoRA kernels on this ISA: rank-r tiles, streaming stores, decode', () => {
      it(`rank-r products run ${isa}`, () => {
        expect(table.lora.rankRIsa).toBe(isa);
      });
      it.each(loraPathCases())('$name: M=$M I=$I O=$O r=$r', async ({ M, I, O, r }) => {
        const L = makeLayer(I, O, r, 6000 + M + O);
        await checkLora(L, batch(L, M, 6000 + M), VARIANTS.slice(0, 1));
      });
      it.each([1, 6])(`the README layer (I=${README_LAYER.I}, O=${README_LAYER.O}, r=${README_LAYER.r}) at M=%i`, async (M) => {
        const L = makeLayer(README_LAYER.I, README_LAYER.O, README_LAYER.r, 4242);
        await checkLora(L, batch(L, M, 4242), VARIANTS.slice(0, 2));
      });
      it.each([1, 9])(`the README layer with W stored (I, O) (fanInFanOut) at M=%i`, async (M) => {
        const L = makeLayer(README_LAYER.I, README_LAYER.O, README_LAYER.r, 4243, true, true);
        await checkLora(L, batch(L, M, 4243), VARIANTS.slice(0, 2));
      });
    });

    shapeSuites('builtin');
  });
}

/** The same shapes on the BLAS (FUSED_LORA_BLAS already set); skipped without one, except in CI. */
export function defineBlasWide(): void {
  const info = backendInfo().cpu;
  if (info.blas === 'builtin' && !process.env.CI) {
    it.skip(`BLAS GEMM at real widths: skipped, no BLAS loaded here (${info.reason})`, () => {});
    return;
  }
  describe(`${info.blas} GEMM, float64-checked at real widths`, () => {
    it('a BLAS is loaded', () => {
      expect(info.blas).not.toBe('builtin');
    });
    shapeSuites('blas');
  });
}
