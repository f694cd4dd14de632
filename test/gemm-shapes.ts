// The GEMM shapes the wide-shape suites run: the products of a LoRA step at real model widths, random
// wide shapes, and a sweep placed on every blocking boundary of the built-in GEMM, read from the
// addon's kernel table and checked against the addon's plan (so the sweep follows the code).
import { native, NativeGemmPlan, NativeKernelTable } from '../lib/backends/cpu/binding';
import { Rng } from './fixtures/mutate';
import { GemmCase } from './gemm-check';

/** Linear layers of real models: [name, in features I, out features O]. */
export const MODEL_LAYERS: Array<[string, number, number]> = [
  ['README example', 1000, 10000],
  ['GPT-2 MLP up', 768, 3072],
  ['GPT-2 MLP down', 3072, 768],
  ['LLaMA-7B attention', 4096, 4096],
  ['LLaMA-7B MLP up', 4096, 11008],
  ['LLaMA-7B MLP down', 11008, 4096],
  ['LLaMA-7B qkv', 4096, 12288],
];
export const MODEL_RANKS = [1, 3, 8, 16, 64];
// Rows of a step: decode (1), the M <= 8 route to the built-in GEMM beside a BLAS, and past it.
const STEP_ROWS = [1, 2, 4, 7, 8, 9, 16, 33, 64];
const SCALARS: Array<[number, number]> = [[1, 0], [1, 1], [-0.5, 2], [2, -1]];

/**
 * The frozen product of a layer in all four transpose cases, one W shared by all four (O × I with a
 * padded leading dimension): y = op(x)·Wᵀ (NT, TT) and dx = op(dy)·W (NN, TN).
 */
export function frozenCases(layer: number): GemmCase[] {
  const [, I, O] = MODEL_LAYERS[layer];
  const seed = 1000 * (layer + 1);
  // y (tb = T: op(B) = Wᵀ, K = I, N = O) and dx (tb = N: op(B) = W, K = O, N = I), each with x or dy
  // stored either way round; W is O × (I + 3) throughout.
  return ([[false, true], [true, true], [false, false], [true, false]] as const).map(([ta, tb]) => {
    const q = tb ? 0 : 1;
    const M = STEP_ROWS[(layer * 2 + q) % STEP_ROWS.length];
    const [alpha, beta] = SCALARS[(layer + q) % SCALARS.length];
    return tb ? { ta, tb, M, N: O, K: I, alpha, beta, pad: [ta ? 1 : 2, 3, 1], seed } : { ta, tb, M, N: I, K: O, alpha, beta, pad: [ta ? 2 : 1, 3, 2], seed };
  });
}

/** The six rank-r products of a LoRA step for one layer and rank (x·A, dy·Bᵀ, sᵀ·dy, x̃ᵀ·ds, s·B, ds·Aᵀ). */
export function rankCases(layer: number, r: number): GemmCase[] {
  const [, I, O] = MODEL_LAYERS[layer];
  const M = STEP_ROWS[(layer + r) % STEP_ROWS.length];
  const seed = 7000 * (layer + 1) + r;
  const shapes: Array<[boolean, boolean, number, number, number]> = [
    [false, false, M, r, I],  // s = x·A
    [false, true, M, r, O],   // ds = dy·Bᵀ
    [true, false, r, O, M],   // dB = sᵀ·dy
    [true, false, I, r, M],   // dA = x̃ᵀ·ds
    [false, false, M, O, r],  // s·B (the unfused path)
    [false, true, M, I, r],   // ds·Aᵀ
  ];
  return shapes.map(([ta, tb, m, n, k], q) => {
    const [alpha, beta] = SCALARS[(q + r) % SCALARS.length];
    return { ta, tb, M: m, N: n, K: k, alpha, beta, pad: [q % 2, 1, (q + 1) % 3], seed: seed + 10 * q };
  });
}

/** Random shapes: M in 1..64, N and K log-uniform up to 20,000 (op(B) kept under 2.5e7 elements). */
export function randomCases(count: number, seed: number): GemmCase[] {
  const rng = new Rng(seed);
  const logUniform = (max: number) => Math.max(1, Math.round(Math.exp(rng.next() * Math.log(max))));
  const out: GemmCase[] = [];
  for (let t = 0; t < count; t++) {
    const M = rng.chance(0.3) ? 1 + rng.int(8) : 1 + rng.int(64);
    let N = logUniform(20000), K = logUniform(20000);
    if (N * K > 2.5e7) {
      if (rng.chance(0.5)) N = Math.floor(2.5e7 / K);
      else K = Math.floor(2.5e7 / N);
    }
    const [alpha, beta] = rng.pick(SCALARS);
    out.push({ ta: rng.chance(0.5), tb: rng.chance(0.5), M, N, K, alpha, beta, pad: [rng.int(8), rng.int(8), rng.int(8)], seed: seed * 131 + t });
  }
  return out;
}

const plan = (c: GemmCase) => native.gemmPlan({ transA: c.ta, transB: c.tb, M: c.M, N: c.N, K: c.K, alpha: c.alpha });
const TRANSPOSES = [[false, false], [true, false], [false, true], [true, true]] as const;

/** What a blocked-path case exercises of its kernel, from the plan (with one thread: the whole call). */
export function blockingTags(c: GemmCase, p: NativeGemmPlan, k: { mr: number; nr: number }): string[] {
  const tags = [];
  if (c.N > p.NC) tags.push('several N panels');
  if (c.N === p.NC) tags.push('N exactly one panel');
  if (c.N > p.NC && c.N % p.NC !== 0) tags.push('a partial last N panel');
  if (c.M > p.MC) tags.push('several M blocks');
  if (c.M === p.MC) tags.push('M exactly one block');
  if (c.K > p.KC) tags.push('several K slabs');
  if (c.M % k.mr !== 0) tags.push('a partial A sliver');
  if (c.N % k.nr !== 0) tags.push('a partial B sliver');
  tags.push(p.directA ? 'A read in place' : 'A packed', p.directB ? 'B read in place' : 'B packed');
  if (!p.directB) tags.push(p.lazyB ? 'B packed a sliver at a time' : 'B packed a panel at a time');
  return tags;
}

export const REQUIRED_TAGS = [
  'several N panels', 'N exactly one panel', 'a partial last N panel', 'several M blocks', 'M exactly one block',
  'several K slabs', 'a partial A sliver', 'a partial B sliver', 'A read in place', 'A packed', 'B read in place', 'B packed',
  'B packed a sliver at a time', 'B packed a panel at a time',
];

/**
 * The boundary sweep for the kernel table of this process's ISA, planned for one thread: for every
 * kernel, M at MR, 2·MR (the in-place B limit) and MC, N at NR, 2·NR (the in-place A limit) and NC,
 * each ± 1 and past the second block, and K at KC ± 1 and past two slabs; each paired with the
 * first partner size (2..400, all four transpose cases) the plan confirms selects that kernel. Then
 * the dot path's N and K limits, and GEMVs. `excused` lists, per kernel, the tags no partner can
 * reach (the plan never picks that kernel there: the 12×8 AVX2 kernel never runs past N = NC).
 */
export function boundaryCases(table: NativeKernelTable): { cases: GemmCase[]; excused: string[][] } {
  const cases: GemmCase[] = [];
  let t = 0;
  const push = (ta: boolean, tb: boolean, M: number, N: number, K: number) => {
    const [alpha, beta] = SCALARS[t % SCALARS.length];
    cases.push({ ta, tb, M, N, K, alpha, beta, pad: [t % 3, (t + 1) % 4, (t + 2) % 3], seed: 50000 + t });
    t++;
  };
  const around = (v: number) => [v - 1, v, v + 1];
  const excused = table.kernels.map(({ mr, nr, mc, kc, nc }, kk) => {
    const Ms = [...around(mr), ...around(2 * mr), ...around(mc), 2 * mc + 1].filter((v) => v >= 2);
    const Ns = [...around(nr), ...around(2 * nr), ...around(nc), 2 * nc + 1].filter((v) => v >= 2);
    const Ks = [1, 15, 16, 17, ...around(kc), 2 * kc + 1];
    // Partners nearest the kernel's own tile first, then every size up to 400.
    const partners = (r: number) => [...new Set([r, r + 1, 2 * r + 1, r - 1, ...Array.from({ length: 399 }, (_, i) => i + 2)])].filter((v) => v >= 2);
    const find = (fixed: 'M' | 'N', v: number, K: number): boolean => {
      for (const partner of partners(fixed === 'M' ? nr : mr)) {
        for (let q = 0; q < 4; q++) {
          const [ta, tb] = TRANSPOSES[(t + q) % 4];
          const [M, N] = fixed === 'M' ? [v, partner] : [partner, v];
          const p = plan({ ta, tb, M, N, K, alpha: 1, beta: 0, pad: [0, 0, 0], seed: 0 });
          if (p.path === 'blocked' && p.kernel === kk) {
            // Each case under ~1 GFLOP: the portable kernel runs it single-threaded.
            push(ta, tb, M, N, Math.max(1, Math.min(K, Math.floor(5e8 / (M * N)))));
            return true;
          }
        }
      }
      return false;
    };
    // A tag is excused only when every target that would show it found no partner.
    const reached = new Map<string, boolean>();
    const note = (tags: string[], ok: boolean) => tags.forEach((tag) => reached.set(tag, (reached.get(tag) ?? false) || ok));
    Ms.forEach((m, i) => {
      const ok = find('M', m, Ks[i % Ks.length]);
      if (m > mc) note(['several M blocks', 'B packed a panel at a time'], ok);  // one block packs B a sliver at a time
      if (m === mc) note(['M exactly one block'], ok);
    });
    Ns.forEach((n, i) => {
      const ok = find('N', n, Ks[(i + 3) % Ks.length]);
      if (n > nc) note(['several N panels', 'a partial last N panel'], ok);
      if (n === nc) note(['N exactly one panel'], ok);
    });
    Ks.forEach((k) => find('M', mr + 1, k) || find('N', nr + 1, k));
    return [...reached].filter(([, ok]) => !ok).map(([tag]) => tag);
  });
  if (table.dot) {
    const { maxN, kc } = table.dot;
    const Ks = [1, kc - 1, kc, kc + 1, 2 * kc + 3];
    [2, 15, 16, 17, maxN - 1, maxN, maxN + 1].forEach((n, i) => {
      push(false, i % 2 === 1, [2, 7, 64, 100][i % 4], n, Ks[i % Ks.length]);
      push(false, i % 2 === 0, [3, 33][i % 2], n, Ks[(i + 2) % Ks.length]);
    });
  }
  // GEMV: M = 1 or N = 1, both layouts of the matrix, K past the vector lengths of every ISA.
  for (const [ta, tb] of TRANSPOSES) {
    push(ta, tb, 1, [7, 4096, 1000, 4097][t % 4], [1, 33, 1025, 4096][(t + 1) % 4]);
    push(ta, tb, [17, 4096, 999][t % 3], 1, [3, 64, 2049][t % 3]);
  }
  // The GEMV over a few rows (x·Wᵀ, M = 2 .. gemvMaxRows): every M, outputs that leave a partial
  // pass of rows and a partial 16-output chunk, K below, at and past the vector lengths; and the
  // first M past it, which is blocked again.
  for (let M = 2; M <= table.gemvMaxRows + 1; M++) {
    push(false, true, M, [1, 5, 17, 4099][M % 4], [1, 7, 8, 9, 17, 33, 1025, 4096][M % 8]);
    push(false, true, M, [3, 16, 770, 33][M % 4], [15, 16, 63, 64, 2049, 3, 31, 767][M % 8]);
  }
  return { cases, excused };
}

/**
 * Shapes on both sides of every thread-count threshold (a GEMM's flops, a GEMV's bytes) for a pool
 * of `threads`: one thread, each count up to `threads`, and the blocked path's grid split both ways.
 */
export function threadedCases(table: NativeKernelTable, threads: number): GemmCase[] {
  const mSplit = 2 * table.kernels[0].mc + 7;
  // [transA, transB, M, N, and what K multiplies: flops (2·M·N per unit of K) or GEMV bytes (4·N)]
  const paths: Array<[boolean, boolean, number, number, number, number]> = [
    [false, true, 64, 4097, 2 * 64 * 4097, table.minFlopsPerThread],             // blocked, wide and short: N split
    [true, false, mSplit, 100, 2 * mSplit * 100, table.minFlopsPerThread],       // blocked, tall: M split
    [false, true, 1, 4096, 4 * 4096, table.minGemvBytesPerThread],               // GEMV, rows layout
    [false, false, 1, 4097, 4 * 4097, table.minGemvBytesPerThread],              // GEMV, columns layout
    [true, true, 4099, 1, 4 * 4099, table.minGemvBytesPerThread],                // GEMV with a strided y
    [false, true, 5, 4097, 4 * 4097, table.minGemvBytesPerThread],               // GEMV over a few rows of x
    [false, true, 300, 16, 2 * 300 * 16, table.minFlopsPerThread],               // the dot path, where there is one
  ];
  const out: GemmCase[] = [];
  for (const [ta, tb, M, N, perK, threshold] of paths) {
    for (let n = 2; n <= threads; n++) {
      const K = Math.ceil((threshold * n) / perK);  // the smallest K that runs n threads, and one less
      for (const k of [K, K - 1]) {
        const [alpha, beta] = SCALARS[out.length % SCALARS.length];
        out.push({ ta, tb, M, N, K: Math.max(1, k), alpha, beta, pad: [out.length % 2, 1, 0], seed: 90000 + out.length });
      }
    }
  }
  return out;
}
