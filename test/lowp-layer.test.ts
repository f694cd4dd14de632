// bfloat16 layers and quantized (int8, nf4) frozen bases on the CPU, through the public API: against
// float64 (bf16 within 2e-2 relative of the unrounded problem; int8 and nf4 within 2e-2 of a problem
// whose W is the dequantized Ŵ), dx in the layer's dtype, fused against unfused, async, dropout,
// training to a teacher, the resident bytes of W, the merge policy and every refusal.
import { describe, expect, it } from 'vitest';
import { AdamW, backendInfo, Linear, LinearLoRA, LoraError, mseLoss, ops, Tensor, tensor, zeros } from '../lib/index';
import { roundToBf16 } from '../lib/io/dtype';
import { expectCode } from './expect-code';
import { makeProblem, Problem, refBackward, refForward, relErr } from './reference';

type Config = { dtype?: 'float32' | 'bfloat16'; quantize?: 'int8' | 'nf4' };
const CONFIGS: Config[] = [{ dtype: 'bfloat16' }, { quantize: 'int8' }, { quantize: 'nf4' }, { quantize: 'int8', dtype: 'bfloat16' }, { quantize: 'nf4', dtype: 'bfloat16' }];
const name = (c: Config) => [c.quantize, c.dtype].filter(Boolean).join(' / ');
const actDtype = (c: Config) => c.dtype ?? 'float32';

function layerOf(P: Problem, c: Config, fused = true): LinearLoRA {
  const base = new Linear(P.I, P.O, { weight: P.W, bias: P.bias ?? undefined, ...c });
  return new LinearLoRA(base, P.r, { A: P.A, B: P.B, alpha: P.scaling * P.r, fused });
}

/** The problem the layer computes: W replaced by its Ŵ (what the GEMMs read) where quantized. */
function asComputed(P: Problem, layer: LinearLoRA): Problem {
  return layer.base.quantize ? { ...P, W: layer.base.weight.dataSync() } : P;
}

const SHAPES: Array<[number, number, number, number]> = [[1, 64, 33, 4], [5, 128, 70, 8], [8, 192, 129, 16], [9, 256, 64, 2], [33, 320, 200, 16], [70, 1024, 65, 8]];

describe.each(CONFIGS.map((c) => [name(c), c] as const))('%s', (_n, c) => {
  it('forward and backward match float64 within 2e-2, fused and unfused, outputs NaN-filled', () => {
    for (const [M, I, O, r] of SHAPES) {
      const P = makeProblem(M, I, O, r, M * 7 + I);
      for (const fused of [true, false]) {
        const layer = layerOf(P, c, fused);
        const Q = asComputed(P, layer);
        const x = tensor(P.x, [M, I], { dtype: actDtype(c) });
        const out = zeros([M, O], { dtype: actDtype(c) });
        out.write(new Float32Array(M * O).fill(NaN));
        const y = layer.forward(x, { out });
        expect(y).toBe(out);
        expect(relErr(y.dataSync(), refForward(Q).y), `y ${M}×${I}×${O} fused=${fused}`).toBeLessThan(2e-2);
        const dy = new Float32Array(M * O).map((_, i) => Math.sin(i * 0.37));
        const dyT = tensor(dy, [M, O], { dtype: actDtype(c) });
        const dx = layer.backward(dyT)!;
        expect(dx.dtype).toBe(actDtype(c));
        const ref = refBackward(Q, c.dtype === 'bfloat16' ? dy.map(roundToBf16) : dy);
        expect(relErr(dx.dataSync(), ref.dx), `dx ${M}×${I}×${O}`).toBeLessThan(2e-2);
        expect(relErr(layer.lora.A.grad!.dataSync(), ref.dA), 'dA').toBeLessThan(2e-2);
        expect(relErr(layer.lora.B.grad!.dataSync(), ref.dB), 'dB').toBeLessThan(2e-2);
        expect(layer.lora.A.dtype).toBe('float32');
      }
    }
  });

  it('the async twins compute what the sync calls do, and dropout trains on the CPU', async () => {
    const P = makeProblem(6, 128, 40, 4, 3);
    const a = layerOf(P, c), b = layerOf(P, c);
    const x = tensor(P.x, [6, 128], { dtype: actDtype(c) });
    expect(Array.from((await a.forwardAsync(x)).dataSync())).toEqual(Array.from(b.forward(x).dataSync()));
    const dy = tensor(new Float32Array(6 * 40).fill(0.5), [6, 40], { dtype: actDtype(c) });
    expect(Array.from((await a.backwardAsync(dy))!.dataSync())).toEqual(Array.from(b.backward(dy)!.dataSync()));
    const d = new LinearLoRA(new Linear(128, 40, { weight: P.W, ...c }), 4, { dropout: 0.3, seed: 5 });
    d.forward(x);
    expect(d.lastDropoutMask!.some((v) => v === 0)).toBe(true);
    d.backward(dy);
    expect(d.lora.A.grad!.dataSync().every(Number.isFinite)).toBe(true);
  });

  it("trains to the demo's teacher: the loss falls more than 100×", () => {
    const I = 128, O = 96, r = 8, M = 64;
    const P = makeProblem(M, I, O, r, 11);
    const teacherB = new Float32Array(r * O).map((_, i) => 0.3 * Math.cos(i));
    const base = () => new Linear(I, O, { weight: P.W, bias: P.bias!, ...c });
    const teacher = new LinearLoRA(base(), r, { A: P.A, B: teacherB, alpha: 16 });
    const student = new LinearLoRA(base(), r, { A: P.A, alpha: 16 });
    const x = tensor(P.x, [M, I], { dtype: actDtype(c) });
    const target = teacher.forward(x);
    const opt = new AdamW(student.parameters(), { lr: 0.01 });
    let first = 0, last = 0;
    for (let step = 0; step < 300; step++) {
      const { loss, grad } = mseLoss(student.forward(x), target);
      if (step === 0) first = loss;
      last = loss;
      student.backward(grad, { inputGrad: false });
      opt.step();
      opt.zeroGrad();
    }
    expect(first / last).toBeGreaterThan(100);
  });
});

describe('bfloat16 tensors on the CPU', () => {
  it('round to nearest even, widen exactly, and move with .to()', () => {
    const v = new Float32Array([1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, -0, 3e38, NaN, 1e-40]);
    const t = tensor(v, [7], { dtype: 'bfloat16' });
    expect(t.device).toBe('cpu');
    expect(t.dtype).toBe('bfloat16');
    const got = t.dataSync();
    for (let i = 0; i < v.length; i++) expect(Object.is(got[i], roundToBf16(v[i])) || (Number.isNaN(got[i]) && Number.isNaN(v[i]))).toBe(true);
    const f = t.to('cpu');
    expect(f.dtype).toBe('float32');
    expect(t.to('cpu', { dtype: 'bfloat16' })).toBe(t);
    expect(tensor([1, 2], [2], { device: 'auto', dtype: 'bfloat16' }).dtype).toBe('bfloat16');  // kept, on the CPU too
    expect(backendInfo().cpu.lowpKernel).toMatch(/^(amx|avx512bf16|avx512|avx2|generic)$/);
    expectCode(() => tensor([1, 2], [2], { device: 'cpu', dtype: 'float16' }), 'ERR_DTYPE');
  });

  it('a bf16 layer refuses float32 inputs and Float32Arrays (ERR_DTYPE), and ops stay float32', () => {
    const layer = new LinearLoRA(new Linear(8, 4, { dtype: 'bfloat16', seed: 1 }), 2);
    expectCode(() => layer.forward(tensor(new Float32Array(16), [2, 8])), 'ERR_DTYPE');
    expectCode(() => layer.forward(new Float32Array(16)), 'ERR_DTYPE');
    const x = tensor(new Float32Array(16), [2, 8], { dtype: 'bfloat16' });
    expectCode(() => ops.loraForward({ x, weight: layer.base.weight, A: layer.lora.A, B: layer.lora.B, scaling: 1 }), 'ERR_DEVICE');
    expect(layer.forward(x).dtype).toBe('bfloat16');
  });
});

describe('resident bytes of the frozen weight (Linear.frozenBytes)', () => {
  it('bf16 is 0.5× fp32, int8 about 0.25×, nf4 about 0.14×', () => {
    const I = 4096, O = 256;
    const W = new Float32Array(O * I).map((_, i) => Math.sin(i));
    const fp32 = new Linear(I, O, { weight: W }).frozenBytes().weight;
    expect(fp32).toBe(4 * O * I);
    expect(new Linear(I, O, { weight: W, dtype: 'bfloat16' }).frozenBytes().weight / fp32).toBe(0.5);
    const int8 = new Linear(I, O, { weight: W, quantize: 'int8' }).frozenBytes().weight / fp32;
    expect(int8).toBeCloseTo(0.25, 3);
    const nf4 = new Linear(I, O, { weight: W, quantize: 'nf4' }).frozenBytes().weight / fp32;
    expect(nf4).toBeCloseTo(0.140625, 6);  // half a byte per value plus 4 bytes per 64
  });
});

describe('merging', () => {
  it('into a bf16 base rounds the merged weight to bf16', () => {
    const P = makeProblem(2, 64, 16, 4, 9);
    const layer = layerOf(P, { dtype: 'bfloat16' });
    const before = layer.base.weight.dataSync();
    layer.merge();
    const W = layer.base.weight.dataSync();
    expect(W.every((v) => v === roundToBf16(v))).toBe(true);
    expect(relErr(W, before)).toBeGreaterThan(0);
    layer.unmerge();
    expect(relErr(layer.base.weight.dataSync(), before)).toBeLessThan(1e-2);
  });

  it('into a quantized base is refused, changing nothing, unless { requantize: true }', () => {
    for (const quantize of ['int8', 'nf4'] as const) {
      const P = makeProblem(3, 128, 32, 4, 2);
      const layer = layerOf(P, { quantize });
      const x = tensor(P.x, [3, 128]);
      const y0 = layer.forward(x).dataSync();
      const W0 = layer.base.weight.dataSync();
      let err: unknown;
      try { layer.merge(); } catch (e) { err = e; }
      expect(err).toBeInstanceOf(LoraError);
      expect((err as LoraError).code).toBe('ERR_ARGUMENT');
      expect((err as LoraError).message).toContain(`an ${quantize} weight`);
      expect(layer.merged).toBe(false);
      expect(Array.from(layer.base.weight.dataSync())).toEqual(Array.from(W0));
      expect(Array.from(layer.forward(x).dataSync())).toEqual(Array.from(y0));
      layer.merge({ requantize: true });
      expect(layer.merged).toBe(true);
      // The merged, re-quantized base computes the adapted layer within the format's error.
      expect(relErr(layer.forward(x).dataSync(), y0)).toBeLessThan(quantize === 'int8' ? 2e-2 : 0.15);
      layer.unmerge({ requantize: true });
      expect(layer.merged).toBe(false);
    }
  });
});

describe('refusals', () => {
  it('unknown quantize values, a device other than the CPU, I not a multiple of 64 for nf4', () => {
    expectCode(() => new Linear(64, 8, { quantize: 'int4' as never }), 'ERR_ARGUMENT');
    expectCode(() => new Linear(100, 8, { quantize: 'nf4' }), 'ERR_SHAPE');
    expect(new Linear(100, 8, { quantize: 'int8' }).quantize).toBe('int8');
    expectCode(() => new Linear(64, 8, { quantize: 'nf4', weight: new Float32Array(64 * 8).fill(NaN) }), 'ERR_NOT_FINITE');
  });

  it('a quantized weight given to an op or a layer that cannot read it (ERR_DTYPE), nothing changed', () => {
    const q = new Linear(64, 8, { quantize: 'nf4', seed: 3 });
    const A = tensor(new Float32Array(64 * 2), [64, 2]), B = tensor(new Float32Array(2 * 8), [2, 8]);
    const x = tensor(new Float32Array(3 * 64).fill(1), [3, 64]);
    expectCode(() => ops.loraForward({ x, weight: q.weight, A, B, scaling: 1 }), 'ERR_DTYPE');
    expectCode(() => new Linear(64, 8, { weight: q.weight }), 'ERR_DTYPE');
    const y = q.forward(x);
    expect(y.dataSync().every(Number.isFinite)).toBe(true);
    // A copy through .to() is dequantized: an ordinary float32 tensor.
    const copy = q.weight.to('cpu', { dtype: 'float32' });
    expect(copy.dtype).toBe('float32');
    expect(copy).not.toBe(q.weight);
    expect(relErr(new Linear(64, 8, { weight: copy }).forward(x).dataSync(), y.dataSync())).toBeLessThan(1e-2);
    expect(q.weight).toBeInstanceOf(Tensor);
  });
});

describe('loading and applying', () => {
  it('loadSafetensors keeps BF16 tensors in bfloat16 when asked, bit for bit', async () => {
    const { writeSafetensors, loadSafetensors } = await import('../lib/index');
    const os = await import('node:os'), path = await import('node:path'), fs = await import('node:fs');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fused-lora-lowp-'));
    const file = path.join(dir, 'w.safetensors');
    const v = new Float32Array(64).map((_, i) => Math.sin(i) * 3);
    await writeSafetensors(file, { w: { data: v, shape: [8, 8] } }, { dtype: 'BF16' });
    const kept = await loadSafetensors(file, { dtype: 'bfloat16' });
    expect(kept.w.dtype).toBe('bfloat16');
    expect(Array.from(kept.w.dataSync())).toEqual(Array.from(v.map(roundToBf16)));
    expect((await loadSafetensors(file)).w.dtype).toBe('float32');
    expect(new Linear(8, 8, { weight: kept.w }).dtype).toBe('bfloat16');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('applyLoRA quantizes every target before it replaces any, or refuses and changes nothing', async () => {
    const { Sequential, applyLoRA } = await import('../lib/index');
    const model = new Sequential({ a: new Linear(128, 64, { seed: 1 }), b: new Linear(64, 30, { seed: 2 }), c: new Linear(30, 8, { seed: 3 }) });
    expectCode(() => applyLoRA(model, { rank: 2, quantize: 'nf4' }), 'ERR_SHAPE');  // c has I = 30
    expect(() => applyLoRA(model, { rank: 2, quantize: 'nf4' })).toThrow(/for options\.quantize but received 'nf4' for c, a Linear of 30 inputs/);
    expect(model.namedModules().map(([, l]) => l.constructor.name)).toEqual(['Linear', 'Linear', 'Linear']);
    expectCode(() => applyLoRA(model, { rank: 2, quantize: 'fp8' as never }), 'ERR_ARGUMENT');
    const layers = applyLoRA(model, { rank: 2, targets: ['a', 'b'], quantize: 'nf4' });
    expect(layers.a.base.quantize).toBe('nf4');
    expect(layers.b.base.frozenBytes().weight).toBe(64 * 30 / 2 + 4 * 64 * 30 / 64);
    expect(model.forward(tensor(new Float32Array(2 * 128).fill(0.1), [2, 128])).shape).toEqual([2, 8]);
  });
});
