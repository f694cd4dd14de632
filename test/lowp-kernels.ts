// The reduced-precision frozen GEMM (native/include/fused_lora/lowp.h) on one ISA, set by the calling
// test file through FUSED_LORA_ISA before the addon loads: dequantization bit for bit against a
// reference implementation of the formats (QLoRA's nf4 code book and block layout, int8 per channel),
// then x·Ŵᵀ and dy·Ŵ through the addon's layer exports against float64 over the bf16-rounded inputs
// and Ŵ: at the blocking boundaries of the micro-kernel families (KC 512 / 1024 / 2048, NC 4096, MC
// 128 / 168 ± 1, AMX's 16- and 32-row tiles), small M with real widths, and the wide layers (4096 ×
// 11008, 4096 × 12288) by Freivalds' test plus exact sampled entries. Every output is pre-filled with
// NaN.
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { native } from '../lib/backends/cpu/binding';
import { lowp, WeightArgs } from '../lib/backends/cpu-lowp/binding';
import { roundToBf16, bf16Bits, bf16FromBits } from '../lib/io/dtype';
import { describeReport, entries, freivalds, Report } from './freivalds';
import { randomArray } from './reference';

export type Format = 'bf16' | 'int8' | 'nf4';
export const FORMATS: readonly Format[] = ['bf16', 'int8', 'nf4'];

/** bitsandbytes' NF4 table (QLoRA appendix E), as published. */
export const NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
  -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
  0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0].map(Math.fround);

const f = Math.fround;
const roundEven = (v: number) => { const r = Math.round(v); return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r; };

/** The reference quantizers: the documented rules, in float32 arithmetic. */
export function refQuantize(format: 'int8' | 'nf4', W: Float32Array, O: number, I: number): { q: Int8Array | Uint8Array; scale: Float32Array } {
  if (format === 'int8') {
    const q = new Int8Array(O * I), scale = new Float32Array(O);
    for (let o = 0; o < O; o++) {
      let amax = 0;
      for (let i = 0; i < I; i++) amax = Math.max(amax, Math.abs(W[o * I + i]));
      const s = amax > 0 ? f(amax / 127) : 1;
      scale[o] = s;
      for (let i = 0; i < I; i++) q[o * I + i] = Math.max(-127, Math.min(127, roundEven(f(W[o * I + i] / s))));
    }
    return { q, scale };
  }
  const n = O * I, q = new Uint8Array(n / 2), scale = new Float32Array(n / 64);
  const mid = NF4.slice(0, 15).map((c, k) => f(f(c + NF4[k + 1]) * 0.5));
  for (let b = 0; b < n / 64; b++) {
    let amax = 0;
    for (let e = b * 64; e < b * 64 + 64; e++) amax = Math.max(amax, Math.abs(W[e]));
    const a = amax > 0 ? amax : 1;
    scale[b] = a;
    for (let e = b * 64; e < b * 64 + 64; e++) {
      const v = f(W[e] / a);
      let code = 0;
      while (code < 15 && v > mid[code]) code++;
      q[e >> 1] |= e % 2 === 0 ? code << 4 : code;
    }
  }
  return { q, scale };
}

/** Ŵ from the codes, by the documented layout: code·scale in float32, rounded to bf16. */
export function refDequantize(w: WeightArgs, O: number, I: number): Float32Array {
  const out = new Float32Array(O * I);
  for (let e = 0; e < O * I; e++) {
    const o = Math.floor(e / I);
    if (w.wFormat === 'bf16') out[e] = roundToBf16(new Float32Array(new Uint32Array([w.W[e] << 16]).buffer)[0]);
    else if (w.wFormat === 'int8') out[e] = roundToBf16(f(w.W[e] * w.wScale[o]));
    else if (w.wFormat === 'nf4') out[e] = roundToBf16(f(NF4[e % 2 === 0 ? w.W[e >> 1] >> 4 : w.W[e >> 1] & 15] * w.wAbsmax[Math.floor(e / 64)]));
    else out[e] = roundToBf16(w.W[e]);
  }
  return out;
}

/** W (O, I) in `format`, from U(−1, 1)/√I values. */
export function makeWeight(format: Format, O: number, I: number, seed: number): { w: WeightArgs; W: Float32Array } {
  const W = randomArray(O * I, seed, 1 / Math.sqrt(I));
  if (format === 'bf16') {
    const h = new Uint16Array(O * I);
    lowp.toBf16({ src: W, dst: h, n: O * I });
    return { w: { wFormat: 'bf16', W: h }, W };
  }
  if (format === 'int8') {
    const q = new Int8Array(O * I), scale = new Float32Array(O);
    lowp.quantize({ format, W, O, I, q, scale });
    return { w: { wFormat: 'int8', W: q, wScale: scale }, W };
  }
  const q = new Uint8Array(O * I / 2), scale = new Float32Array(O * I / 64);
  lowp.quantize({ format, W, O, I, q, scale });
  return { w: { wFormat: 'nf4', W: q, wAbsmax: scale }, W };
}

export function dequantized(w: WeightArgs, O: number, I: number): Float32Array {
  const out = new Float32Array(O * I).fill(NaN);
  lowp.dequantize({ ...w, O, I, out });
  return out;
}

const rounded = (a: Float32Array) => a.map(roundToBf16);

/** The decode path takes int8 W on VNNI (backendInfo().lowpQuantDecode) up to this I (nf4: any). */
export const VNNI_MAX_K = 65536;

/**
 * x as the VNNI kernels read it (lowp.h; nf4 as 256·q1 + q2): each row s·(q1 + q2/256), s = max|x|/127, q1 =
 * round(x·(127/max|x|)), q2 = round((x − q1·s)·256·(127/max|x|)), both clamped to ±127, in float32 as
 * the kernel rounds them (x − q1·s rounded once, as an FMA). Rows are I apart; the values exact in float64.
 */
export function vnniSplit(x: Float32Array, M: number, I: number): Float64Array {
  const out = new Float64Array(M * I);
  const clamp = (v: number) => Math.max(-127, Math.min(127, roundEven(v)));
  for (let m = 0; m < M; m++) {
    let amax = 0;
    for (let i = 0; i < I; i++) amax = Math.max(amax, Math.abs(x[m * I + i]));
    const s = amax > 0 ? f(amax / 127) : 1, inv = amax > 0 ? f(127 / amax) : 1, inv2 = f(inv * 256);
    for (let i = 0; i < I; i++) {
      const v = x[m * I + i];
      const q1 = clamp(f(v * inv));
      const q2 = clamp(f(f(v - q1 * s) * inv2));  // v − q1·s is exact in float64: one rounding
      out[m * I + i] = (q1 + q2 / 256) * s;
    }
  }
  return out;
}

/**
 * Ŵ as the VNNI kernels multiply it, in float64: int8 q·scale (in float32, unrounded to bf16); nf4
 * round(code·16383)/16383·absmax.
 */
function vnniWeight(w: WeightArgs, O: number, I: number): Float64Array {
  if (w.wFormat === 'int8') return Float64Array.from(w.W, (q, e) => f(q * w.wScale[Math.floor(e / I)]));
  if (w.wFormat !== 'nf4') throw new Error(`no VNNI kernel for ${w.wFormat}`);
  const c16 = NF4.map((c) => roundEven(f(c * 16383)));
  const out = new Float64Array(O * I);
  for (let e = 0; e < O * I; e++) out[e] = (c16[e % 2 === 0 ? w.W[e >> 1] >> 4 : w.W[e >> 1] & 15] / 16383) * w.wAbsmax[Math.floor(e / 64)];
  return out;
}

/** Whether x·Ŵᵀ of M rows runs a VNNI kernel here, and so rounds as vnniSplit and vnniWeight do. */
export function vnniDecode(format: string, M: number, I: number): boolean {
  return (format === 'nf4' || (format === 'int8' && I <= VNNI_MAX_K)) && M <= 8 && native.backendInfo().lowpQuantDecode === 'vnni';
}

/** x·Ŵᵀ (forward) and dy·Ŵ (backward) of one shape, checked by Freivalds and sampled entries. */
export function checkProducts(format: Format, M: number, I: number, O: number, seed: number, samples: { rows: number[]; cols: number[] } = { rows: [], cols: [] }): void {
  checkProductsOf(makeWeight(format, O, I, seed).w, format, M, I, O, seed, samples);
}

/** The same for a weight given as its codes (any the format can hold, not only what quantize makes). */
export function checkProductsOf(w: WeightArgs, format: Format, M: number, I: number, O: number, seed: number, samples: { rows: number[]; cols: number[] } = { rows: [], cols: [] }): void {
  const What = dequantized(w, O, I);
  const x = randomArray(M * I, seed + 1), dy = randomArray(M * O, seed + 2);
  const y = new Float32Array(M * O).fill(NaN), dx = new Float32Array(M * I).fill(NaN);
  lowp.linearForward({ M, I, O, act: 'f32', x, ...w, bias: null, y });
  lowp.linearBackward({ M, I, O, act: 'f32', dy, ...w, dx });
  const vnni = vnniDecode(format, M, I);
  const xr = vnni ? vnniSplit(x, M, I) : rounded(x), dyr = rounded(dy);
  const Wf = vnni ? vnniWeight(w, O, I) : What;
  const fwd = { A: { data: xr, rows: M, cols: I, ld: I, trans: false }, B: { data: Wf, rows: I, cols: O, ld: I, trans: true }, alpha: 1, extra: null, C: y, ldc: O };
  const bwd = { A: { data: dyr, rows: M, cols: O, ld: O, trans: false }, B: { data: What, rows: O, cols: I, ld: I, trans: false }, alpha: 1, extra: null, C: dx, ldc: I };
  for (const [name, p, N] of [['x·Ŵᵀ', fwd, O], ['dy·Ŵ', bwd, I]] as const) {
    const r: Report = freivalds(p, seed + 7);
    const rows = [0, M - 1, ...samples.rows.filter((i) => i < M)];
    const cols = [0, N - 1, ...samples.cols.filter((j) => j < N)];
    entries(p, rows, cols, r);
    expect(r.failed, `${format} ${name} M=${M} I=${I} O=${O}: ${describeReport(r)}`).toBe(0);
  }
}

/** The suites, for the ISA the test file set. */
export function defineLowpSuites(isa: string): void {
  const kernel = native.backendInfo().lowpKernel;
  const here = isa === kernel;
  describe(`the reduced-precision GEMM on ${isa}`, () => {
    it(`runs the ${isa} kernel, or the best below it this CPU has (backendInfo().cpu.lowpKernel)`, () => {
      // A CPU without the ISA caps the choice (the products below are then skipped), and says so here.
      if (!here) console.warn(`FUSED_LORA_ISA=${isa} runs ${kernel} on this CPU`);
      const builtin = native.backendInfo().builtinKernel;
      if (isa !== 'avx512bf16' && isa !== 'amx') {
        expect(kernel).toBe(builtin);  // the widening fallback of the chosen fp32 kernels
      } else {
        let flags = '';
        try { flags = fs.readFileSync('/proc/cpuinfo', 'utf8'); } catch { /* not Linux: the addon's answer stands */ }
        const bf16 = /\bavx512_bf16\b/.test(flags) && builtin === 'avx512';
        const amx = bf16 && /\bamx_bf16\b/.test(flags) && /\bamx_tile\b/.test(flags);
        // amx asked of a CPU without the tiles caps to vdpbf16ps, or to the fp32 kernels below it
        if (flags) expect(kernel).toBe(isa === 'amx' && amx ? 'amx' : bf16 ? 'avx512bf16' : builtin);
      }
      // int8 and nf4 decode take VNNI under the vdpbf16ps decode path (the avx512bf16 and amx families) only.
      const { lowpQuantDecode } = native.backendInfo();
      let cpu = '';
      try { cpu = fs.readFileSync('/proc/cpuinfo', 'utf8'); } catch { /* not Linux */ }
      const vnni = /\bavx512_vnni\b/.test(cpu) && /\bavx512bw\b/.test(cpu);
      if (cpu) expect(lowpQuantDecode).toBe((kernel === 'amx' || kernel === 'avx512bf16') && vnni ? 'vnni' : 'bf16');
    });

    it('quantizes and dequantizes bit for bit as the reference implementation of the formats', () => {
      for (const [O, I] of [[1, 64], [3, 128], [17, 192], [5, 4096], [64, 320]]) {
        const W = randomArray(O * I, O * 7 + I, 3);
        W[0] = 0; W[I - 1] = -W[I - 2];  // an exact zero, and a tie between signs of one magnitude
        for (const format of ['int8', 'nf4'] as const) {
          const { w } = makeWeight(format, O, I, O + I);
          const ref = refQuantize(format, W, O, I);
          const got = format === 'int8' ? { q: new Int8Array(O * I), scale: new Float32Array(O) } : { q: new Uint8Array(O * I / 2), scale: new Float32Array(O * I / 64) };
          lowp.quantize({ format, W, O, I, ...got });
          expect(Array.from(got.q), `${format} codes ${O}×${I}`).toEqual(Array.from(ref.q));
          expect(Array.from(got.scale), `${format} scales ${O}×${I}`).toEqual(Array.from(ref.scale));
          const mine = dequantized(w, O, I), theirs = refDequantize(w, O, I);
          expect(mine.every((v, e) => Object.is(v, theirs[e])), `${format} Ŵ ${O}×${I}`).toBe(true);
        }
        const { w } = makeWeight('bf16', O, I, 3);
        expect(Array.from(dequantized(w, O, I))).toEqual(Array.from(refDequantize(w, O, I)));
      }
    });

    it('converts float32 to bf16 and back bit for bit as the reference, specials and ragged ends included', () => {
      // Random bit patterns (every exponent: NaNs with any payload, infinities, denormals), ties at
      // both parities, and lengths that leave each vector body's tail.
      const bits = new Uint32Array(70_000);
      let s = 12345;
      for (let i = 0; i < bits.length; i++) { s = (Math.imul(s, 1103515245) + 12345) >>> 0; bits[i] = (s ^ (s << 7)) >>> 0; }
      bits.set([0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, 0xffbfffff, 0x00000001, 0x80000000, 0x3f808000, 0x3f818000, 0x7f7fffff, 0x3f7fffff]);
      const src = new Float32Array(bits.buffer);
      for (const n of [bits.length, 1, 15, 16, 17, 33, 65_537]) {
        const dst = new Uint16Array(n + 1).fill(0xabcd);
        lowp.toBf16({ src, dst, n });
        const ref = Array.from(bits.subarray(0, n), (b) => bf16FromBits(b));  // from the bits: no NaN passes through a JS number
        expect(Array.from(dst.subarray(0, n)), `toBf16 n=${n}`).toEqual(ref);
        expect(dst[n]).toBe(0xabcd);  // nothing written past n
        const back = new Float32Array(n + 1).fill(NaN);
        lowp.fromBf16({ src: dst, dst: back, n });
        const backBits = new Uint32Array(back.buffer);
        expect(Array.from(backBits.subarray(0, n)), `fromBf16 n=${n}`).toEqual(ref.map((h) => (h << 16) >>> 0));
        expect(back[n]).toBeNaN();
      }
    });

    it('int8 codes the quantizer never makes (−128) decode as −128·scale in every path', () => {
      // The quantizer clamps to ±127, but the kernels take any int8 code: the VNNI decode kernel
      // flips the sign bit (−128 is then 0 of the unsigned operand), the others widen or look up.
      for (const [O, I] of [[3, 64], [17, 130], [40, 4096]]) {
        const q = new Int8Array(O * I).map((_, e) => (e % 5 === 0 ? -128 : ((e * 37) % 256) - 128));
        const scale = new Float32Array(O).map((_, o) => 1e-3 * (o + 1));
        const w: WeightArgs = { wFormat: 'int8', W: q, wScale: scale };
        expect(Array.from(dequantized(w, O, I)), `Ŵ ${O}×${I}`).toEqual(Array.from(refDequantize(w, O, I)));
        if (!here) continue;  // the products on a capped ISA: its own suite
        for (const M of [1, 2, 5, 8, 9, 33]) checkProductsOf(w, 'int8', M, I, O, O + M);
      }
    });

    // Under an ISA without the VNNI kernels nothing falls back, and the test is skipped.
    it.skipIf(!(here && vnniDecode('int8', 1, 64)))('int8 and nf4 decode on VNNI hand what the split of x cannot hold to the bf16 arithmetic: NaN, infinities, tiny rows, int8 I past its int32 range', () => {
      for (const format of ['int8', 'nf4'] as const) {
        const O = 37, I = 320;
        const { w } = makeWeight(format, O, I, 11);
        const What = dequantized(w, O, I);
        // x·Ŵᵀ of the rows `rows` of x against the bf16 arithmetic (x and Ŵ rounded to bf16).
        const againstBf16 = (x: Float32Array, y: Float32Array, rows: number[], what: string) => {
          const xs = new Float32Array(rows.length * I), ys = new Float32Array(rows.length * O);
          rows.forEach((m, i) => { xs.set(x.subarray(m * I, m * I + I), i * I); ys.set(y.subarray(m * O, m * O + O), i * O); });
          const p = { A: { data: rounded(xs), rows: rows.length, cols: I, ld: I, trans: false }, B: { data: What, rows: I, cols: O, ld: I, trans: true }, alpha: 1, extra: null, C: ys, ldc: O };
          const r = freivalds(p, 5);
          entries(p, [0, rows.length - 1], [0, O - 1], r);
          expect(r.failed, `${format}, ${what}: ${describeReport(r)}`).toBe(0);
        };
        for (const [bad, what] of [[NaN, 'a NaN'], [Infinity, 'an infinity'], [-Infinity, 'a −infinity']] as const) {
          const x = randomArray(3 * I, 21), y = new Float32Array(3 * O).fill(NaN);
          x[I + 17] = bad;  // row 1
          lowp.linearForward({ M: 3, I, O, act: 'f32', x, ...w, bias: null, y });
          expect(y.subarray(O, 2 * O).every((v) => !Number.isFinite(v)), `${format}: ${what} reaches its row`).toBe(true);
          againstBf16(x, y, [0, 2], `${what} in row 1: the other rows`);
        }
        const x = randomArray(2 * I, 22), y = new Float32Array(2 * O).fill(NaN);
        for (let i = 0; i < I; i++) x[I + i] *= 1e-32;  // max|x| < 2^-100: 127 / max|x| would overflow
        lowp.linearForward({ M: 2, I, O, act: 'f32', x, ...w, bias: null, y });
        againstBf16(x, y, [0, 1], 'a row of values below 2^-100');
      }
      checkProducts('int8', 2, VNNI_MAX_K + 64, 5, 3);  // vnniDecode is false past VNNI_MAX_K: checked as bf16
      checkProducts('nf4', 2, VNNI_MAX_K + 64, 5, 3);  // nf4 has no such limit: checked as VNNI
    });

    it('holds every NF4 code at its value: a block of the 16 codes times absmax', () => {
      const I = 64, W = new Float32Array(I);
      for (let k = 0; k < 16; k++) for (let j = 0; j < 4; j++) W[k * 4 + j] = NF4[k] * 2.5;
      const { q, scale } = refQuantize('nf4', W, 1, I);
      expect(scale[0]).toBe(2.5);
      const got = dequantized({ wFormat: 'nf4', W: q as Uint8Array, wAbsmax: scale }, 1, I);
      for (let e = 0; e < I; e++) expect(got[e]).toBe(roundToBf16(f(NF4[e >> 2] * 2.5)));
      expect(bf16Bits(got[28])).toBe(0);  // code 7 is the exact zero
    });

    // Where the CPU caps the ISA, the capped kernels are the ones their own suite (test/lowp-<kernel>.test.ts)
    // already sweeps: the products are skipped here rather than run a second time.
    if (!here) {
      it.skip(`the products on ${isa}: skipped, this CPU runs ${kernel} (test/lowp-${kernel}.test.ts)`, () => {});
      return;
    }
    describe.each(FORMATS.map((x) => [x]))('%s', (format) => {
      const step = format === 'nf4' ? 64 : 1;
      const K = (k: number) => Math.max(step, Math.round(k / step) * step);
      it('small and odd shapes, M 1 to 17', () => {
        for (const M of [1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 14, 15, 16, 17])  // every decode row count, then blocked
          for (const [I, O] of [[K(1), 1], [K(3), 5], [K(64), 33], [K(65), 47], [K(200), 31]]) checkProducts(format, M, I, O, M * 131 + I);
      });
      it('the blocking boundaries: KC 512 / 1024 / 2048 ± 1, NC 4096 ± 1, MC 128 / 168 ± 1, the 16- and 32-row tiles ± 1', () => {
        const Ks = format === 'nf4' ? [448, 512, 576, 960, 1024, 1088, 1984, 2048, 2048 + 64] : [511, 512, 513, 1023, 1024, 1025, 2047, 2048, 2049];
        for (const I of Ks) checkProducts(format, 30, I, 70, I);
        for (const O of [4095, 4096, 4097, 4129]) checkProducts(format, 17, K(96), O, O, { rows: [], cols: [4080, 4095, 4096] });
        for (const M of [31, 32, 33, 48, 127, 128, 129, 167, 168, 169, 337]) checkProducts(format, M, K(128), 40, M, { rows: [13, 14, 15, 16, 31, 32, 127, 128, 167, 168], cols: [] });
        checkProducts(format, 9, K(64), 4097, 5, { rows: [], cols: [4096] });  // dx: I = 4097 columns would need I % 64 for nf4
      });
      it('wide layers at small M: 4096 × 11008 and 4096 × 12288 (decode path and blocked)', () => {
        const cases: Array<[number, number, number]> = [[1, 4096, 11008], [8, 4096, 11008], [64, 4096, 11008], [9, 4096, 12288], [1, 11008, 4096]];
        for (const [M, I, O] of cases) checkProducts(format, M, I, O, I + O + M, { rows: [], cols: [4095, 4096, 8191, 11007] });
      });
    });
  });
}
