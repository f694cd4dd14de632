// MultiLoRALinear in a model: applyLoRA with adapters makes a Sequential of MultiLoRALinear whose
// forward takes { adapterNames }; it trains each adapter as the single-adapter model of that adapter
// would on its rows; each adapter saves as its own PEFT directory, which loads into a plain LinearLoRA
// model (or back into a multi-adapter one) with the same outputs.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AdamW, applyLoRA, Linear, LinearLoRA, loadAdapter, MultiLoRALinear, ReLU, saveAdapter, Sequential, tensor } from '../lib/index';
import { expectCode } from './expect-code';
import { rowNames } from './multi-lora-check';
import { randomArray, relErr } from './reference';

const I = 24, H = 20, O = 12;
const model = () => new Sequential({ fc1: new Linear(I, H, { seed: 1, bias: true }), act: new ReLU(), fc2: new Linear(H, O, { seed: 2 }) });
const SPECS = { sql: { rank: 4, alpha: 8, seed: 5 }, qa: { rank: 2, alpha: 1, rslora: true, seed: 6, dropout: 0.1 } };

const tmp: string[] = [];
const tmpDir = () => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'fused-lora-multi-'));
  tmp.push(d);
  return d;
};
afterAll(() => { for (const d of tmp) fs.rmSync(d, { recursive: true, force: true }); });

function rowsOf(v: Float32Array, names: readonly string[], n: string, width: number): Float32Array {
  const rows = names.flatMap((m, i) => (m === n ? [i] : []));
  const out = new Float32Array(rows.length * width);
  rows.forEach((row, j) => out.set(v.subarray(row * width, (row + 1) * width), j * width));
  return out;
}

/** A multi-adapter model, and per adapter the single-adapter model of its options, B set alike. */
function setup() {
  const multi = model();
  const wrapped = applyLoRA(multi, { adapters: SPECS, targets: ['fc1', 'fc2'] });
  const single: Record<string, { m: Sequential; layers: Record<string, LinearLoRA> }> = {};
  for (const [n, { rank, ...rest }] of Object.entries(SPECS)) {
    const m = model();
    single[n] = { m, layers: applyLoRA(m, { rank, ...rest, targets: ['fc1', 'fc2'] }) };
  }
  for (const [p, layer] of Object.entries(wrapped)) {
    for (const n of layer.adapterNames) {
      const B = randomArray(layer.adapter(n).B.size, p.length + n.length);
      layer.adapter(n).B.write(B);
      single[n].layers[p].lora.B.write(B);
      expect(layer.adapter(n).A.dataSync()).toEqual(single[n].layers[p].lora.A.dataSync());
    }
  }
  return { multi, wrapped, single };
}

describe('applyLoRA with adapters', () => {
  it('wraps each target in a MultiLoRALinear; a step trains each adapter as its own model would on its rows', () => {
    const { multi, wrapped, single } = setup();
    expect(Object.keys(wrapped)).toEqual(['fc1', 'fc2']);
    expect(multi.multiLoRALayers()).toEqual(wrapped);
    expect(wrapped.fc1).toBeInstanceOf(MultiLoRALinear);
    // Adapters of one name differ between layers (their seeds are derived per layer).
    expect(wrapped.fc1.adapter('sql').A.dataSync().slice(0, 4)).not.toEqual(new Linear(1, 1).weight.dataSync());
    const M = 9, names = rowNames(M, ['sql', 'qa'], 'random', 4, 4);
    const x = randomArray(M * I, 1), dy = randomArray(M * O, 2);
    const y = multi.forward(tensor(x, [M, I]), { adapterNames: names }).dataSync();
    multi.backward(tensor(dy, [M, O]));
    for (const n of ['sql', 'qa']) {
      const k = names.filter((m) => m === n).length;
      const { m, layers } = single[n];
      const ys = m.forward(tensor(rowsOf(x, names, n, I), [k, I])).dataSync();
      m.backward(tensor(rowsOf(dy, names, n, O), [k, O]));
      expect(relErr(rowsOf(y, names, n, O), ys)).toBeLessThan(1e-6);
      for (const p of ['fc1', 'fc2']) {
        expect(relErr(wrapped[p].adapter(n).A.grad!.dataSync(), layers[p].lora.A.grad!.dataSync()), `${p} ${n} dA`).toBeLessThan(1e-6);
        expect(relErr(wrapped[p].adapter(n).B.grad!.dataSync(), layers[p].lora.B.grad!.dataSync()), `${p} ${n} dB`).toBeLessThan(1e-6);
      }
    }
    // '__base__' rows are the frozen model's.
    const base = model().forward(tensor(rowsOf(x, names, '__base__', I), [names.filter((n) => n === '__base__').length, I])).dataSync();
    expect(relErr(rowsOf(y, names, '__base__', O), base)).toBeLessThan(1e-6);
  });

  it('Sequential.forwardAsync / backwardAsync pass adapterNames on and give what forward / backward give; eval() reaches every MultiLoRALinear', async () => {
    const a = setup(), b = setup();
    a.multi.eval();
    expect(Object.values(a.wrapped).every((l) => l.training === false)).toBe(true);
    a.multi.train();  // backward needs a training forward; both draw the same dropout masks (same seeds)
    expect(Object.values(a.wrapped).every((l) => l.training === true)).toBe(true);
    const M = 7, names = rowNames(M, ['sql', 'qa'], 'random', 3, 3);
    const x = randomArray(M * I, 11), dy = randomArray(M * O, 12);
    const y1 = a.multi.forward(tensor(x, [M, I]), { adapterNames: names }).dataSync();
    const dx1 = a.multi.backward(tensor(dy, [M, O]))!.dataSync();
    const y2 = (await b.multi.forwardAsync(tensor(x, [M, I]), { adapterNames: names })).dataSync();
    const dx2 = (await b.multi.backwardAsync(tensor(dy, [M, O])))!.dataSync();
    expect(y2).toEqual(y1);
    expect(dx2).toEqual(dx1);
    for (const p of ['fc1', 'fc2']) for (const n of ['sql', 'qa']) expect(b.wrapped[p].adapter(n).B.grad!.dataSync()).toEqual(a.wrapped[p].adapter(n).B.grad!.dataSync());
    await expect(b.multi.forwardAsync(tensor(x, [M, I]), { adapterName: names } as never)).rejects.toThrow(/Sequential\.forwardAsync: .*did you mean 'adapterNames'/);
  });

  it('applyLoRA on a model whose targets already have adapters says so', () => {
    const { multi } = setup();
    expect(() => applyLoRA(multi, { rank: 2, targets: ['fc1'] })).toThrow(/applyLoRA: expected a model with Linear layers to wrap for model but received a model whose layers fc1 already have adapters/);
  });

  it('refuses layer-wide LoRA options beside adapters, and Sequential.forward refuses unknown keys', () => {
    expectCode(() => applyLoRA(model(), { adapters: SPECS, rank: 4 } as never), 'ERR_ARGUMENT');
    expectCode(() => applyLoRA(model(), { adapters: SPECS, targets: ['nothing'] }), 'ERR_ARGUMENT');
    expectCode(() => applyLoRA(model(), { adapters: { a: { rank: 2, seed: -1 } } }), 'ERR_ARGUMENT');
    expectCode(() => applyLoRA(model(), { adaptors: SPECS } as never), 'ERR_ARGUMENT');
    const { multi } = setup();
    expectCode(() => multi.forward(tensor(randomArray(I, 1), [1, I]), { adapterName: ['sql'] } as never), 'ERR_ARGUMENT');
    expectCode(() => multi.forward(tensor(randomArray(I, 1), [1, I])), 'ERR_ARGUMENT');  // a MultiLoRALinear needs names
  });
});

describe('saveAdapter and loadAdapter with { adapter }', () => {
  it('each adapter is its own PEFT directory; loaded into a plain LinearLoRA model it gives the same outputs', async () => {
    const { multi, wrapped } = setup();
    const opts = Object.fromEntries(['sql', 'qa'].map((n) => [n, new AdamW(Object.values(wrapped).flatMap((l) => l.adapter(n).parameters()), { lr: 0.01 * (n === 'sql' ? 1 : 3) })]));
    for (let step = 0; step < 3; step++) {
      const names = rowNames(8, ['sql', 'qa'], 'interleaved');
      multi.forward(tensor(randomArray(8 * I, step), [8, I]), { adapterNames: names });
      multi.backward(tensor(randomArray(8 * O, step + 9), [8, O]));
      for (const o of Object.values(opts)) o.step();
      multi.zeroGrad();
    }
    for (const l of Object.values(wrapped)) l.eval();
    const x = tensor(randomArray(5 * I, 42), [5, I]);
    for (const [n, spec] of Object.entries(SPECS)) {
      const dir = tmpDir();
      await saveAdapter(dir, wrapped, { adapter: n });
      const config = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
      expect(config.r).toBe(spec.rank);
      expect(config.lora_alpha).toBe(spec.alpha);
      const want = multi.forward(x, { adapterNames: Array(5).fill(n) }).dataSync();

      const plain = model();
      const layers = applyLoRA(plain, { rank: spec.rank, targets: ['fc1', 'fc2'] });
      await loadAdapter(dir, layers);
      expect(plain.forward(x).dataSync()).toEqual(want);

      const other = model();
      const back = applyLoRA(other, { adapters: { [n]: { rank: spec.rank }, extra: { rank: 3 } } });
      for (const l of Object.values(back)) l.eval();
      await loadAdapter(dir, back, { adapter: n });
      expect(other.forward(x, { adapterNames: Array(5).fill(n) }).dataSync()).toEqual(want);
    }
  });

  it('refuses a multi-adapter layer without options.adapter, an unknown adapter, and options.adapter for a plain layer; writes nothing', async () => {
    const { wrapped, single } = setup();
    const dir = tmpDir();
    await expect(saveAdapter(dir, wrapped)).rejects.toMatchObject({ code: 'ERR_ARGUMENT', message: expect.stringMatching(/options\.adapter/) });
    await expect(saveAdapter(dir, wrapped, { adapter: 'sqll' })).rejects.toMatchObject({ code: 'ERR_ARGUMENT', message: expect.stringMatching(/"sqll"/) });
    await expect(saveAdapter(dir, single.sql.layers, { adapter: 'sql' })).rejects.toMatchObject({ code: 'ERR_ARGUMENT' });
    await expect(saveAdapter(dir, wrapped, { adapter: 3 } as never)).rejects.toMatchObject({ code: 'ERR_ARGUMENT' });
    await expect(saveAdapter(dir, wrapped, { adaptor: 'sql' } as never)).rejects.toMatchObject({ code: 'ERR_ARGUMENT' });
    expect(fs.readdirSync(dir)).toEqual([]);
    await saveAdapter(dir, wrapped, { adapter: 'qa' });
    await expect(loadAdapter(dir, wrapped)).rejects.toMatchObject({ code: 'ERR_ARGUMENT' });
    await expect(loadAdapter(dir, wrapped, { adapter: 'sql' })).rejects.toMatchObject({ code: 'ERR_SHAPE' });  // rank 2 file into a rank 4 adapter
  });
});

describe('MultiLoRALinear over a reduced-precision base', () => {
  it('takes a quantized base and a bfloat16 one (numerics in test/multi-lora-lowp.test.ts); its dtype is the base\'s', () => {
    const q = new Linear(64, 8, { seed: 1, quantize: 'nf4' });
    const mq = new MultiLoRALinear(q, { adapters: { a: { rank: 2 } } });
    expect(mq.dtype).toBe('float32');
    const b = new Linear(64, 8, { seed: 1, dtype: 'bfloat16', device: 'cpu' });
    const mb = new MultiLoRALinear(b, { adapters: { a: { rank: 2 } } });
    expect(mb.dtype).toBe('bfloat16');
    expect(() => mb.forward(tensor(new Float32Array(64), [1, 64]), { adapterNames: ['a'] })).toThrow(/bfloat16/);
    mq.dispose();
    mb.dispose();
  });

  it('applyLoRA with adapters and quantize quantizes every target first, or refuses and changes nothing', () => {
    const build = () => new Sequential({ fc1: new Linear(64, 32, { seed: 1, bias: true }), act: new ReLU(), fc2: new Linear(32, 8, { seed: 2 }) });
    const m = build();
    const x = tensor(randomArray(3 * 64, 9), [3, 64]);
    const layers = applyLoRA(m, { adapters: { a: { rank: 2 } }, targets: ['fc1'], quantize: 'int8' });
    expect(Object.keys(layers)).toEqual(['fc1']);
    expect(layers.fc1.base.quantize).toBe('int8');
    // B starts at zero, so the adapted model is the model over the quantized base: close to the original.
    const plain = build().forward(x).dataSync(), quantized = m.forward(x, { adapterNames: ['a', 'a', 'a'] }).dataSync();
    expect(relErr(quantized, plain)).toBeGreaterThan(0);
    expect(relErr(quantized, plain)).toBeLessThan(2e-2);
    const n = build();
    const nf4 = () => applyLoRA(n, { adapters: { a: { rank: 2 } }, quantize: 'nf4' });  // fc1 could be, fc2 (32 inputs) cannot
    expectCode(nf4, 'ERR_SHAPE');
    expect(nf4).toThrow(/'nf4' for fc2, a Linear of 32 inputs/);
    expect(Object.keys(n.multiLoRALayers())).toEqual([]);
    const int4 = () => applyLoRA(n, { adapters: { a: { rank: 2 } }, quantize: 'int4' as never });
    expectCode(int4, 'ERR_ARGUMENT');
    expect(int4).toThrow(/'int8' or 'nf4' for options\.quantize/);
    expect(Object.keys(n.multiLoRALayers())).toEqual([]);
  });
});
