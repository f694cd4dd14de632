// MultiLoRALinear against the float64 reference: the helpers the numerics suites share (one suite per
// ISA of the built-in kernels, test/multi-lora-<isa>.test.ts, and one on the BLAS in
// test/multi-lora.test.ts). A case is a base, K adapters of mixed ranks and scalings, and an adapter
// name per row; the reference computes each row with its own adapter in float64.
import { expect } from 'vitest';
import { Linear, MultiLoRALinear, Tensor, tensor } from '../lib/index';
import { native } from '../lib/backends/cpu/binding';
import { randomArray, relErr } from './reference';

export interface AdapterCase { name: string; r: number; alpha: number; rslora?: boolean }
export interface MultiCase { M: number; I: number; O: number; adapters: AdapterCase[]; names: string[]; bias: boolean; seed: number }

/** Names for M rows: 'grouped' (each adapter's rows together), 'interleaved' (round robin), or 'random'; every `baseEvery`-th row '__base__'. */
export function rowNames(M: number, adapters: readonly string[], how: 'grouped' | 'interleaved' | 'random', seed = 1, baseEvery = 0): string[] {
  const K = adapters.length;
  const rnd = randomArray(M, seed);
  const out: string[] = [];
  for (let m = 0; m < M; m++) {
    if (baseEvery > 0 && m % baseEvery === baseEvery - 1) out.push('__base__');
    else if (how === 'grouped') out.push(adapters[Math.min(K - 1, Math.floor((m * K) / M))]);
    else if (how === 'interleaved') out.push(adapters[m % K]);
    else out.push(adapters[Math.floor(((rnd[m] + 1) / 2) * K) % K]);
  }
  return out;
}

export function build(c: MultiCase) {
  const { I, O } = c;
  const W = randomArray(O * I, c.seed + 2, 1 / Math.sqrt(I));
  const bias = c.bias ? randomArray(O, c.seed + 3) : undefined;
  const base = new Linear(I, O, { weight: W, bias });
  const adapters: Record<string, { rank: number; alpha: number; rslora?: boolean; A: Float32Array; B: Float32Array }> = {};
  c.adapters.forEach((a, k) => {
    adapters[a.name] = {
      rank: a.r, alpha: a.alpha, rslora: a.rslora, A: randomArray(I * a.r, c.seed + 10 + k, 1 / Math.sqrt(I)), B: randomArray(a.r * O, c.seed + 40 + k),
    };
  });
  const layer = new MultiLoRALinear(base, { adapters });
  return { layer, W, bias, adapters, x: randomArray(c.M * I, c.seed + 1), dy: randomArray(c.M * O, c.seed + 5) };
}

/** The float64 forward and backward of every row with its own adapter (no dropout). */
export function reference(c: MultiCase, W: Float32Array, bias: Float32Array | undefined, x: Float32Array, dy: Float32Array,
  adapters: Record<string, { rank: number; alpha: number; rslora?: boolean; A: Float32Array; B: Float32Array }>) {
  const { M, I, O } = c;
  const y = new Float64Array(M * O), dx = new Float64Array(M * I);
  const dA: Record<string, Float64Array> = {}, dB: Record<string, Float64Array> = {};
  for (const [n, a] of Object.entries(adapters)) {
    dA[n] = new Float64Array(I * a.rank);
    dB[n] = new Float64Array(a.rank * O);
  }
  for (let m = 0; m < M; m++) {
    const xm = x.subarray(m * I, (m + 1) * I), dym = dy.subarray(m * O, (m + 1) * O);
    for (let o = 0; o < O; o++) {
      let acc = bias ? bias[o] : 0;
      for (let i = 0; i < I; i++) acc += xm[i] * W[o * I + i];
      y[m * O + o] = acc;
    }
    for (let i = 0; i < I; i++) {
      let acc = 0;
      for (let o = 0; o < O; o++) acc += dym[o] * W[o * I + i];
      dx[m * I + i] = acc;
    }
    const name = c.names[m];
    if (name === '__base__') continue;
    const a = adapters[name], r = a.rank;
    const scaling = a.rslora ? a.alpha / Math.sqrt(r) : a.alpha / r;
    const s = new Float64Array(r), ds = new Float64Array(r);
    for (let k = 0; k < r; k++) {
      let acc = 0;
      for (let i = 0; i < I; i++) acc += xm[i] * a.A[i * r + k];
      s[k] = acc;
      let dacc = 0;
      for (let o = 0; o < O; o++) dacc += dym[o] * a.B[k * O + o];
      ds[k] = scaling * dacc;
    }
    for (let o = 0; o < O; o++) {
      let acc = 0;
      for (let k = 0; k < r; k++) acc += s[k] * a.B[k * O + o];
      y[m * O + o] += scaling * acc;
    }
    for (let k = 0; k < r; k++) for (let o = 0; o < O; o++) dB[name][k * O + o] += scaling * s[k] * dym[o];
    for (let i = 0; i < I; i++) {
      let acc = 0;
      for (let k = 0; k < r; k++) {
        acc += ds[k] * a.A[i * r + k];
        dA[name][i * r + k] += xm[i] * ds[k];
      }
      dx[m * I + i] += acc;
    }
  }
  return { y, dx, dA, dB };
}

const nanTensor = (shape: number[]) => tensor(new Float32Array(shape.reduce((p, d) => p * d, 1)).fill(NaN), shape);

/**
 * One step of the case through the public API, outputs pre-filled with NaN and gradients pre-filled
 * with known values (backward accumulates into them), checked against the float64 reference.
 */
export function checkCase(c: MultiCase, tol = 2e-5): void {
  const { layer, W, bias, adapters, x, dy } = build(c);
  const pre: Record<string, { A: Float32Array; B: Float32Array }> = {};
  for (const n of layer.adapterNames) {
    const l = layer.adapter(n);
    pre[n] = { A: randomArray(l.A.size, 77, 0.01), B: randomArray(l.B.size, 78, 0.01) };
    (l.A.grad as Tensor).write(pre[n].A);
    (l.B.grad as Tensor).write(pre[n].B);
  }
  const out = nanTensor([c.M, c.O]), dxOut = nanTensor([c.M, c.I]);
  const y = layer.forward(tensor(x, [c.M, c.I]), { adapterNames: c.names, out });
  const dx = layer.backward(tensor(dy, [c.M, c.O]), { out: dxOut })!;
  const ref = reference(c, W, bias, x, dy, adapters);
  const label = `M=${c.M} I=${c.I} O=${c.O} ranks ${c.adapters.map((a) => a.r).join(',')}`;
  expect(y).toBe(out);
  expect(relErr(y.dataSync(), ref.y), `y ${label}`).toBeLessThan(tol);
  expect(relErr(dx.dataSync(), ref.dx), `dx ${label}`).toBeLessThan(tol);
  for (const n of layer.adapterNames) {
    const l = layer.adapter(n);
    const wantA = ref.dA[n].map((v, i) => v + pre[n].A[i]), wantB = ref.dB[n].map((v, i) => v + pre[n].B[i]);
    expect(relErr(l.A.grad!.dataSync(), wantA), `dA ${n} ${label}`).toBeLessThan(tol);
    expect(relErr(l.B.grad!.dataSync(), wantB), `dB ${n} ${label}`).toBeLessThan(tol);
  }
  layer.dispose();
}

const A3: AdapterCase[] = [{ name: 'sql', r: 8, alpha: 16 }, { name: 'qa', r: 1, alpha: 3 }, { name: 'sum', r: 16, alpha: 4, rslora: true }];

/** Awkward shapes, tile edges ± 1, and real widths at small M, each grouped, interleaved and random with '__base__' rows. */
export function numericsCases(): Array<[string, MultiCase]> {
  const out: Array<[string, MultiCase]> = [];
  const shapes: Array<[number, number, number]> = [[1, 7, 9], [5, 3, 2], [13, 33, 17], [31, 65, 63], [33, 129, 31], [64, 17, 257], [9, 255, 33]];
  let seed = 100;
  for (const [M, I, O] of shapes) {
    for (const how of ['grouped', 'interleaved', 'random'] as const) {
      const names = rowNames(M, A3.map((a) => a.name), how, seed, how === 'random' ? 4 : 0);
      out.push([`${M}x${I}x${O} ${how}`, { M, I, O, adapters: A3, names, bias: seed % 2 === 0, seed: seed++ }]);
    }
  }
  // Real widths, small M: the frozen GEMM wide, the rank-r products at each adapter's own rank.
  const wide: Array<[number, number, number]> = [[6, 768, 3072], [4, 4096, 4096], [3, 4096, 11008], [5, 3072, 768], [4, 12288, 64]];
  for (const [M, I, O] of wide) {
    out.push([`${M}x${I}x${O} interleaved`, { M, I, O, adapters: A3, names: rowNames(M, A3.map((a) => a.name), 'interleaved', seed, 3), bias: true, seed: seed++ }]);
  }
  // dx's LoRA term takes rank_r_product for runs from dxRankRMinBytes of dx, the built-in GEMM below:
  // one adapter's run exactly there, one a row short, a few rows and frozen-only rows around them.
  const I = 4096, at = Math.ceil(native.builtinKernels().lora.dxRankRMinBytes / (4 * I));
  const names = [...Array(at).fill('sql'), ...Array(at - 1).fill('qa'), 'sum', '__base__', 'sum', 'sum', '__base__'];
  out.push([`${names.length}x${I}x48 runs at dx's rank_r_product limit`, { M: names.length, I, O: 48, adapters: A3, names, bias: false, seed: seed++ }]);
  return out;
}
