// MultiLoRALinear over a reduced-precision frozen base on the CPU (bfloat16 layers; int8 and nf4
// weights with float32 or bfloat16 activations): against float64 (the problem whose W is the Ŵ the
// GEMMs read, and whose x is rounded to bf16 where the layer's activations are bf16: within 2e-2),
// against K LinearLoRA layers over the same base given each adapter's rows, sync and async, with
// dropout, and trained: an optimizer step of one adapter leaves the others bit-identical.
import { describe, expect, it } from 'vitest';
import { AdamW, Linear, LinearLoRA, MultiLoRALinear, Tensor, tensor, zeros } from '../lib/index';
import { roundToBf16 } from '../lib/io/dtype';
import { AdapterCase, MultiCase, reference, rowNames } from './multi-lora-check';
import { randomArray, relErr } from './reference';

type Config = { dtype?: 'float32' | 'bfloat16'; quantize?: 'int8' | 'nf4' };
const CONFIGS: Config[] = [{ dtype: 'bfloat16' }, { quantize: 'int8' }, { quantize: 'nf4' }, { quantize: 'int8', dtype: 'bfloat16' }, { quantize: 'nf4', dtype: 'bfloat16' }];
const label = (c: Config) => [c.quantize, c.dtype].filter(Boolean).join(' / ');
const actDtype = (c: Config) => c.dtype ?? 'float32';

const A3: AdapterCase[] = [{ name: 'sql', r: 8, alpha: 16 }, { name: 'qa', r: 1, alpha: 3 }, { name: 'sum', r: 16, alpha: 4, rslora: true }];
type AdapterInit = { rank: number; alpha: number; rslora?: boolean; A: Float32Array; B: Float32Array };

function build(c: Config, mc: MultiCase) {
  const { I, O } = mc;
  const W = randomArray(O * I, mc.seed + 2, 1 / Math.sqrt(I));
  const bias = mc.bias ? randomArray(O, mc.seed + 3) : undefined;
  const base = new Linear(I, O, { weight: W, bias, ...c });
  const adapters: Record<string, AdapterInit> = {};
  mc.adapters.forEach((a, k) => {
    adapters[a.name] = { rank: a.r, alpha: a.alpha, rslora: a.rslora, A: randomArray(I * a.r, mc.seed + 10 + k, 1 / Math.sqrt(I)), B: randomArray(a.r * O, mc.seed + 40 + k) };
  });
  const x = randomArray(mc.M * I, mc.seed + 1), dy = randomArray(mc.M * O, mc.seed + 5);
  return { base, adapters, x, dy, layer: new MultiLoRALinear(base, { adapters }) };
}

/** What the layer computes from: Ŵ as the GEMMs read it, and the inputs as the layer holds them (bf16-rounded for a bf16 layer). */
function computed(c: Config, base: Linear, x: Float32Array, dy: Float32Array, bias: Float32Array | undefined) {
  const round = (v: Float32Array) => (actDtype(c) === 'bfloat16' ? v.map(roundToBf16) : v);
  return { W: base.weight.dataSync(), x: round(x), dy: round(dy), bias: bias && c.dtype === 'bfloat16' ? bias.map(roundToBf16) : bias };
}

const nanOf = (c: Config, shape: number[]) => {
  const t = zeros(shape, { dtype: actDtype(c) });
  t.write(new Float32Array(shape[0] * shape[1]).fill(NaN));
  return t;
};

const CASES: Array<[string, MultiCase]> = [];
{
  let seed = 500;
  const shapes: Array<[number, number, number]> = [[5, 64, 33], [13, 128, 65], [33, 192, 129], [40, 256, 200], [4, 4096, 4096], [6, 768, 3072], [3, 4096, 11008]];
  for (const [M, I, O] of shapes) {
    for (const how of I >= 768 ? (['random'] as const) : (['grouped', 'random'] as const)) {  // real widths: one segmentation, for time
      CASES.push([`${M}x${I}x${O} ${how}`, { M, I, O, adapters: A3, names: rowNames(M, A3.map((a) => a.name), how, seed, how === 'random' ? 4 : 0), bias: seed % 2 === 0, seed: seed++ }]);
    }
  }
}

describe.each(CONFIGS.map((c) => [label(c), c] as const))('MultiLoRALinear on a %s base', (_n, c) => {
  it.each(CASES)('%s: forward, dx, dA, dB match float64 within 2e-2, outputs NaN-filled', (_l, mc) => {
    const { base, adapters, x, dy, layer } = build(c, mc);
    const q = computed(c, base, x, dy, mc.bias ? randomArray(mc.O, mc.seed + 3) : undefined);
    const out = nanOf(c, [mc.M, mc.O]), dxOut = nanOf(c, [mc.M, mc.I]);
    const y = layer.forward(tensor(x, [mc.M, mc.I], { dtype: actDtype(c) }), { adapterNames: mc.names, out });
    const dx = layer.backward(tensor(dy, [mc.M, mc.O], { dtype: actDtype(c) }), { out: dxOut })!;
    expect(y).toBe(out);
    expect(dx).toBe(dxOut);
    expect(y.dtype).toBe(actDtype(c));
    const ref = reference(mc, q.W, q.bias, q.x, q.dy, adapters);
    expect(relErr(y.dataSync(), ref.y), 'y').toBeLessThan(2e-2);
    expect(relErr(dx.dataSync(), ref.dx), 'dx').toBeLessThan(2e-2);
    for (const n of layer.adapterNames) {
      const used = mc.names.includes(n);
      const l = layer.adapter(n);
      if (used) {
        expect(relErr(l.A.grad!.dataSync(), ref.dA[n]), `dA ${n}`).toBeLessThan(2e-2);
        expect(relErr(l.B.grad!.dataSync(), ref.dB[n]), `dB ${n}`).toBeLessThan(2e-2);
      } else {
        expect(l.A.grad!.dataSync().every((v) => v === 0)).toBe(true);
      }
    }
    layer.dispose();
  });

  it('equals a LinearLoRA per adapter over the same base, given that adapter\'s rows (sync and async, dropout)', async () => {
    // Each adapter has at least 9 rows, so the separate layers' frozen GEMMs take the same blocked
    // path as the batch's (M <= 8 takes the decode path, which sums in another order).
    const I = 128, O = 96;
    const counts: Record<string, number> = { sql: 9, qa: 12, sum: 10, __base__: 3 };
    const names = Object.entries(counts).flatMap(([n, k]) => Array<string>(k).fill(n));
    const order = randomArray(names.length, 9).map((v, i) => v * 1000 + i);
    const shuffled = [...names.keys()].sort((a, b) => order[a] - order[b]).map((i) => names[i]);
    const M = shuffled.length;
    const mc: MultiCase = { M, I, O, adapters: A3, names: shuffled, bias: true, seed: 900 };
    for (const asyncCalls of [false, true]) {
      const { base, adapters, x, dy, layer: unused } = build(c, mc);
      unused.dispose();
      const withDropout = Object.fromEntries(Object.entries(adapters).map(([n, a], k) => [n, { ...a, dropout: k === 1 ? 0.2 : 0, seed: 31 + k }]));
      const multi = new MultiLoRALinear(base, { adapters: withDropout });
      const xt = tensor(x, [M, I], { dtype: actDtype(c) }), dyt = tensor(dy, [M, O], { dtype: actDtype(c) });
      const y = asyncCalls ? await multi.forwardAsync(xt, { adapterNames: shuffled }) : multi.forward(xt, { adapterNames: shuffled });
      const dx = (asyncCalls ? await multi.backwardAsync(dyt) : multi.backward(dyt))!;
      const yv = y.dataSync(), dxv = dx.dataSync();
      for (const [n, a] of Object.entries(withDropout)) {
        const rowsOf = shuffled.flatMap((v, m) => (v === n ? [m] : []));
        const pick = (v: Float32Array, w: number) => { const o = new Float32Array(rowsOf.length * w); rowsOf.forEach((m, j) => o.set(v.subarray(m * w, (m + 1) * w), j * w)); return o; };
        const single = new LinearLoRA(base, a.rank, { alpha: a.alpha, rslora: a.rslora, A: a.A, B: a.B, dropout: a.dropout, seed: a.seed });
        const ys = single.forward(tensor(pick(x, I), [rowsOf.length, I], { dtype: actDtype(c) }));
        const dxs = single.backward(tensor(pick(dy, O), [rowsOf.length, O], { dtype: actDtype(c) }))!;
        const tol = actDtype(c) === 'bfloat16' ? 5e-3 : 1e-5;  // bf16 outputs: a last-place difference in a few elements
        expect(relErr(pick(yv, O), ys.dataSync()), `y ${n} async=${asyncCalls}`).toBeLessThan(tol);
        expect(relErr(pick(dxv, I), dxs.dataSync()), `dx ${n}`).toBeLessThan(tol);
        expect(relErr(multi.adapter(n).A.grad!.dataSync(), single.lora.A.grad!.dataSync()), `dA ${n}`).toBeLessThan(1e-4);
        expect(relErr(multi.adapter(n).B.grad!.dataSync(), single.lora.B.grad!.dataSync()), `dB ${n}`).toBeLessThan(1e-4);
        single.dispose();
      }
      const base32 = yv.filter((_v, k) => shuffled[Math.floor(k / O)] === '__base__');
      expect(base32.every(Number.isFinite)).toBe(true);
      multi.dispose();
    }
  });

  it('trains: one adapter\'s optimizer step leaves the others bit-identical, and its loss falls', () => {
    const I = 64, O = 48, M = 24;
    const mc: MultiCase = { M, I, O, adapters: A3, names: rowNames(M, A3.map((a) => a.name), 'grouped'), bias: false, seed: 1234 };
    const { layer, x } = build(c, mc);
    for (const n of layer.adapterNames) layer.adapter(n).B.write(new Float32Array(layer.adapter(n).B.size));  // B = 0: LoRA's start
    const target = randomArray(M * O, 77, 0.5);
    const opt = new AdamW(layer.adapter('sql').parameters(), { lr: 1e-2 });
    const before = Object.fromEntries(['qa', 'sum'].map((n) => [n, layer.adapter(n).parameters().map((p: Tensor) => p.dataSync().slice())]));
    const xt = tensor(x, [M, I], { dtype: actDtype(c) });
    const lossOf = (y: Float32Array) => { let s = 0; for (let k = 0; k < 8 * O; k++) s += (y[k] - target[k]) ** 2; return s; };  // the sql rows
    let first = NaN, last = NaN;
    for (let step = 0; step < 60; step++) {
      layer.zeroGrad();
      const y = layer.forward(xt, { adapterNames: mc.names }).dataSync();
      const g = new Float32Array(M * O);
      for (let k = 0; k < M * O; k++) g[k] = mc.names[Math.floor(k / O)] === 'sql' ? 2 * (y[k] - target[k]) / (8 * O) : 0;
      layer.backward(tensor(g, [M, O], { dtype: actDtype(c) }));
      opt.step();
      const l = lossOf(y);
      if (step === 0) first = l;
      last = l;
    }
    expect(last).toBeLessThan(first * 0.8);
    for (const n of ['qa', 'sum']) {
      layer.adapter(n).parameters().forEach((p: Tensor, i: number) => expect(p.dataSync()).toEqual(before[n][i]));
    }
    layer.dispose();
  });
});
