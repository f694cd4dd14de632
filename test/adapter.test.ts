// PEFT adapters as a specification: the files PEFT would read (keys, shapes, Aᵀ and Bᵀ, the config),
// round trips in F32 and BF16, scaling restored from lora_alpha / use_rslora / the patterns, F16
// files, optimizer state, and every failed load or save leaving every layer and file as it was.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AdamW, Linear, LinearLoRA, loadAdapter, LoraError, mseLoss, readSafetensors, saveAdapter, writeSafetensors } from '../lib/index';
import type { OptimizerState } from '../lib/optim';
import { roundToBf16 } from '../lib/io/dtype';
import { randomArray } from './reference';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fused-lora-adapter-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const freshDir = () => path.join(tmp, `a${n++}`);

const Q = 'model.layers.0.self_attn.q_proj';
const V = 'model.layers.0.self_attn.v_proj';
const D = 'model.layers.1.mlp.down_proj';
const keyA = (p: string) => `base_model.model.${p}.lora_A.weight`;
const keyB = (p: string) => `base_model.model.${p}.lora_B.weight`;

/** A layer with random A and B (B is zero at initialisation, which would hide a transposition). */
function layer(I: number, O: number, r: number, seed: number, opts: Record<string, unknown> = {}): LinearLoRA {
  return new LinearLoRA(new Linear(I, O, { seed }), r, { seed, B: randomArray(r * O, seed + 1000), ...opts });
}

/** Three modules: q and v share rank 2 and alpha 4; down has rank 3 and alpha 12. */
function model(seed: number, opts: Record<string, unknown> = {}): Record<string, LinearLoRA> {
  return {
    [Q]: layer(6, 5, 2, seed, { alpha: 4, ...opts }),
    [V]: layer(6, 3, 2, seed + 1, { alpha: 4, ...opts }),
    [D]: layer(7, 6, 3, seed + 2, { alpha: 12, ...opts }),
  };
}

/** Everything a load may change, as bytes: A, B and the scaling of every layer. */
function snapshot(layers: Record<string, LinearLoRA>) {
  return Object.entries(layers).map(([p, l]) => [p, Buffer.from(l.lora.A.dataSync().buffer), Buffer.from(l.lora.B.dataSync().buffer), l.scaling, l.lora.rslora]);
}

async function expectRefusedUnchanged(layers: Record<string, LinearLoRA>, load: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  const before = snapshot(layers);
  const err = await load.then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(LoraError);
  expect(err).toMatchObject({ code });
  expect((err as Error).message).toMatch(message);
  expect(snapshot(layers)).toEqual(before);
}

const readJson = (dir: string, f = 'adapter_config.json') => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
const writeJson = (dir: string, value: unknown, f = 'adapter_config.json') => fs.writeFileSync(path.join(dir, f), JSON.stringify(value));
const weightsFile = (dir: string) => path.join(dir, 'adapter_model.safetensors');

/** (rows, cols) → (cols, rows). */
function transposed(src: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(src.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = src[i * cols + j];
  return out;
}

describe('save then load', () => {
  it('F32: fresh layers receive A and B bit for bit, and the scaling', async () => {
    const dir = freshDir();
    const src = model(1);
    await saveAdapter(dir, src, { baseModel: 'tiny-llama' });
    const dst = model(50, { alpha: 1 });
    expect(snapshot(dst)).not.toEqual(snapshot(src));
    const result = await loadAdapter(dir, dst);
    expect(result).toEqual({ modules: [Q, V, D], optimizer: false });
    expect(snapshot(dst)).toEqual(snapshot(src));
    expect(dst[D].scaling).toBe(12 / 3);
  });

  it('BF16: fresh layers receive the BF16-rounded A and B', async () => {
    const dir = freshDir();
    const src = model(2);
    await saveAdapter(dir, src, { dtype: 'BF16' });
    const dst = model(60);
    await loadAdapter(dir, dst);
    for (const p of [Q, V, D]) {
      const A = src[p].lora.A.dataSync(), B = src[p].lora.B.dataSync();
      expect(dst[p].lora.A.dataSync()).toEqual(A.map(roundToBf16));
      expect(dst[p].lora.B.dataSync()).toEqual(B.map(roundToBf16));
      expect(dst[p].lora.A.dataSync()).not.toEqual(A);  // rounding did happen
    }
    expect((await readSafetensors(weightsFile(dir))).tensors[keyA(Q)].dtype).toBe('BF16');
  });

  it('a layer built as new LinearLoRA(new Linear(I, O, { seed }), r, { seed }) computes the same after a round trip', async () => {
    const dir = freshDir();
    const orig = new LinearLoRA(new Linear(8, 4, { seed: 3 }), 2, { seed: 3 });
    orig.lora.B.buffer().set(randomArray(2 * 4, 9));  // as if trained: B starts at zero
    await saveAdapter(dir, { 'model.layers.0.q_proj': orig });
    const copy = new LinearLoRA(new Linear(8, 4, { seed: 3 }), 2, { seed: 4 });
    const x = randomArray(5 * 8, 10);
    expect(copy.forward(x).dataSync()).not.toEqual(orig.forward(x).dataSync());
    await loadAdapter(dir, { 'model.layers.0.q_proj': copy });
    expect(copy.forward(x).dataSync()).toEqual(orig.forward(x).dataSync());
  });

  it('loading a subset of the saved modules is a partial load; other modules in the file are ignored', async () => {
    const dir = freshDir();
    const src = model(3);
    await saveAdapter(dir, src);
    const only = { [V]: layer(6, 3, 2, 70) };
    await loadAdapter(dir, only);
    expect(only[V].lora.A.dataSync()).toEqual(src[V].lora.A.dataSync());
  });
});

describe('the files PEFT reads', () => {
  it('adapter_model.safetensors has base_model.model.<path>.lora_A.weight (r, I) = Aᵀ and lora_B.weight (O, r) = Bᵀ', async () => {
    const dir = freshDir();
    const src = model(4);
    await saveAdapter(dir, src);
    const { tensors, metadata } = await readSafetensors(weightsFile(dir));
    expect(Object.keys(tensors).sort()).toEqual([Q, V, D].flatMap((p) => [keyA(p), keyB(p)]).sort());
    expect(metadata.format).toBe('pt');
    for (const p of [Q, V, D]) {
      const l = src[p], I = l.base.inFeatures, O = l.base.outFeatures, r = l.rank;
      expect(tensors[keyA(p)].shape).toEqual([r, I]);
      expect(tensors[keyB(p)].shape).toEqual([O, r]);
      const A = l.lora.A.dataSync(), B = l.lora.B.dataSync();
      // Element by element: PEFT's lora_A.weight[k][i] is our A[i][k]; lora_B.weight[o][k] is B[k][o].
      for (let i = 0; i < I; i++) for (let k = 0; k < r; k++) expect(tensors[keyA(p)].data[k * I + i]).toBe(A[i * r + k]);
      for (let k = 0; k < r; k++) for (let o = 0; o < O; o++) expect(tensors[keyB(p)].data[o * r + k]).toBe(B[k * O + o]);
    }
  });

  it('adapter_config.json has PEFT LoraConfig fields', async () => {
    const dir = freshDir();
    const layers = { [Q]: layer(6, 5, 4, 5, { alpha: 8, dropout: 0.05 }), [V]: layer(6, 3, 4, 6, { alpha: 8, dropout: 0.05 }), 'model.layers.1.self_attn.q_proj': layer(6, 5, 4, 7, { alpha: 8 }) };
    await saveAdapter(dir, layers, { baseModel: 'meta-llama/Llama-3.2-1B' });
    expect(readJson(dir)).toEqual({
      peft_type: 'LORA', task_type: null, r: 4, lora_alpha: 8, use_rslora: false, lora_dropout: 0.05,
      target_modules: ['q_proj', 'v_proj'], bias: 'none', fan_in_fan_out: false,
      base_model_name_or_path: 'meta-llama/Llama-3.2-1B', inference_mode: true, init_lora_weights: true,
      modules_to_save: null, layers_to_transform: null, layers_pattern: null, rank_pattern: {}, alpha_pattern: {},
      revision: null, use_dora: false,
    });
  });

  it('layers that differ from the first in rank or alpha go to rank_pattern and alpha_pattern', async () => {
    const dir = freshDir();
    const layers = { ...model(8), 'model.layers.1.mlp.up_proj': layer(6, 7, 5, 9, { alpha: 4 }) };
    await saveAdapter(dir, layers);
    const c = readJson(dir);
    expect([c.r, c.lora_alpha]).toEqual([2, 4]);
    expect(c.rank_pattern).toEqual({ [D]: 3, 'model.layers.1.mlp.up_proj': 5 });
    expect(c.alpha_pattern).toEqual({ [D]: 12 });
    expect(c.target_modules).toEqual(['down_proj', 'q_proj', 'up_proj', 'v_proj']);
    expect(c.base_model_name_or_path).toBeNull();
  });

  it('an optimizer state goes to optimizer.safetensors: F32 tensors, the scalars and the module order in __metadata__', async () => {
    const dir = freshDir();
    const state = { kind: 'adamw', step: 7, hyper: { lr: 1e-3, betas: [0.9, 0.999] }, tensors: { '0.m': randomArray(4, 1), '0.v': randomArray(4, 2) } };
    await saveAdapter(dir, model(10), { dtype: 'BF16', optimizer: { stateDict: () => state } });
    const { tensors, metadata } = await readSafetensors(path.join(dir, 'optimizer.safetensors'));
    expect(tensors['0.m']).toEqual({ dtype: 'F32', shape: [4], data: state.tensors['0.m'] });
    expect(metadata).toMatchObject({ kind: 'adamw', step: '7', hyper: JSON.stringify(state.hyper), modules: JSON.stringify([Q, V, D]) });
    expect(metadata.save_id).toBe((await readSafetensors(weightsFile(dir))).metadata.fused_lora_save_id);
    expect(fs.readdirSync(dir).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors', 'optimizer.safetensors']);
  });
});

describe('scaling on load', () => {
  it('comes from lora_alpha and use_rslora', async () => {
    const dir = freshDir();
    await saveAdapter(dir, { [Q]: layer(6, 5, 4, 11, { alpha: 8, rslora: true }) });
    const dst = { [Q]: layer(6, 5, 4, 12) };
    expect(dst[Q].scaling).toBe(1);
    await loadAdapter(dir, dst);
    expect(dst[Q].lora.rslora).toBe(true);
    expect(dst[Q].scaling).toBe(8 / Math.sqrt(4));
    writeJson(dir, { ...readJson(dir), lora_alpha: 32, use_rslora: false });
    await loadAdapter(dir, dst);
    expect(dst[Q].lora.rslora).toBe(false);
    expect(dst[Q].scaling).toBe(32 / 4);
  });

  it('PEFT pattern keys that are module-name suffixes apply to every module they end', async () => {
    const dir = freshDir();
    await saveAdapter(dir, model(13));
    writeJson(dir, { ...readJson(dir), lora_alpha: 2, rank_pattern: { down_proj: 3 }, alpha_pattern: { v_proj: 6, down_proj: 9 } });
    const dst = model(14);
    await loadAdapter(dir, dst);
    expect([dst[Q].scaling, dst[V].scaling, dst[D].scaling]).toEqual([2 / 2, 6 / 2, 9 / 3]);
  });
});

describe('a failed load changes no layer', () => {
  it('a rank other than the layer\'s is ERR_SHAPE naming the module and both ranks', async () => {
    const dir = freshDir();
    await saveAdapter(dir, model(20));
    const dst = { ...model(21), [D]: layer(7, 6, 4, 22) };
    await expectRefusedUnchanged(dst, loadAdapter(dir, dst), 'ERR_SHAPE', new RegExp(`rank 4 \\(the layer's\\) for module "${D}" but received rank 3`));
  });

  it('other features than the layer\'s are ERR_SHAPE, after earlier layers passed their checks', async () => {
    const dir = freshDir();
    await saveAdapter(dir, model(23));
    const wrongO = { ...model(24), [D]: layer(7, 5, 3, 25) };
    await expectRefusedUnchanged(wrongO, loadAdapter(dir, wrongO), 'ERR_SHAPE', /lora_B\.weight of shape \(O, r\) = \[5, 3\] for module .*down_proj.* but received shape \[6, 3\]/);
    const wrongI = { ...model(24), [D]: layer(8, 6, 3, 25) };
    await expectRefusedUnchanged(wrongI, loadAdapter(dir, wrongI), 'ERR_SHAPE', /lora_A\.weight of shape \(r, I\) = \[3, 8\] .* received shape \[3, 7\]/);
  });

  it('a module missing from the file is ERR_IO naming its key', async () => {
    const dir = freshDir();
    await saveAdapter(dir, model(26));
    const dst = { ...model(27), 'model.layers.2.self_attn.q_proj': layer(6, 5, 2, 28) };
    await expectRefusedUnchanged(dst, loadAdapter(dir, dst), 'ERR_IO', /has no base_model\.model\.model\.layers\.2\.self_attn\.q_proj\.lora_A\.weight/);
  });

  it('a file with only one of the pair is ERR_IO', async () => {
    const dir = freshDir();
    await saveAdapter(dir, model(29));
    const { tensors, metadata } = await readSafetensors(weightsFile(dir));
    delete tensors[keyB(V)];
    await writeSafetensors(weightsFile(dir), tensors, { metadata });
    const dst = model(30);
    await expectRefusedUnchanged(dst, loadAdapter(dir, dst), 'ERR_IO', /lora_B\.weight/);
  });

  it('a truncated weights file, a bad header, or an unsupported dtype is ERR_IO', async () => {
    const dir = freshDir();
    await saveAdapter(dir, model(31));
    const good = fs.readFileSync(weightsFile(dir));
    const dst = model(32);
    fs.writeFileSync(weightsFile(dir), good.subarray(0, good.length - 3));
    await expectRefusedUnchanged(dst, loadAdapter(dir, dst), 'ERR_IO', /not a valid safetensors file/);
    fs.writeFileSync(weightsFile(dir), Buffer.concat([good.subarray(0, 8), Buffer.from('['), good.subarray(9)]));
    await expectRefusedUnchanged(dst, loadAdapter(dir, dst), 'ERR_IO', /not a valid safetensors file/);
    // I32 has F32's size, so only the dtype check can refuse it.
    fs.writeFileSync(weightsFile(dir), Buffer.from(good.toString('latin1').replace('"dtype":"F32"', '"dtype":"I32"'), 'latin1'));
    await expectRefusedUnchanged(dst, loadAdapter(dir, dst), 'ERR_IO', /dtype I32 is not supported/);
    fs.writeFileSync(weightsFile(dir), good);
    await loadAdapter(dir, dst);  // the same layers load once the file is whole again
  });

  it('a missing, malformed, foreign or inconsistent config is ERR_IO', async () => {
    const dir = freshDir();
    await saveAdapter(dir, model(33));
    const config = readJson(dir);
    const dst = model(34);
    const cases: [unknown, RegExp][] = [
      [{ ...config, peft_type: 'IA3' }, /peft_type "LORA"/],
      [{ ...config, use_dora: true }, /DoRA/],
      [{ ...config, bias: 'all' }, /bias/],
      [{ ...config, r: 0 }, /positive integer for r/],
      [{ ...config, lora_alpha: '8' }, /lora_alpha/],
      [{ ...config, rank_pattern: { [D]: 4 } }, /adapter_config\.json gives module "model\.layers\.1\.mlp\.down_proj" rank 4 but adapter_model\.safetensors has rank 3/],
      [[config], /JSON object/],
    ];
    for (const [c, message] of cases) {
      writeJson(dir, c);
      await expectRefusedUnchanged(dst, loadAdapter(dir, dst), 'ERR_IO', message);
    }
    fs.writeFileSync(path.join(dir, 'adapter_config.json'), '{"r": 2,');
    await expectRefusedUnchanged(dst, loadAdapter(dir, dst), 'ERR_IO', /not JSON/);
    fs.rmSync(path.join(dir, 'adapter_config.json'));
    await expectRefusedUnchanged(dst, loadAdapter(dir, dst), 'ERR_IO', /could not read .*adapter_config\.json/);
  });

  it('non-finite weights in the file are ERR_NOT_FINITE', async () => {
    const dir = freshDir();
    await saveAdapter(dir, model(35));
    const { tensors, metadata } = await readSafetensors(weightsFile(dir));
    tensors[keyB(D)].data[1] = NaN;
    await writeSafetensors(weightsFile(dir), tensors, { metadata });
    const dst = model(36);
    await expectRefusedUnchanged(dst, loadAdapter(dir, dst), 'ERR_NOT_FINITE', /lora_B\.weight/);
  });

  it('a merged layer is refused (ERR_ARGUMENT): its weight holds the old adapter', async () => {
    const dir = freshDir();
    await saveAdapter(dir, model(37));
    const dst = model(38);
    dst[V].merge();
    await expectRefusedUnchanged(dst, loadAdapter(dir, dst), 'ERR_ARGUMENT', /unmerge\(\)/);
  });
});

describe('F16 and BF16 files written elsewhere', () => {
  /** A safetensors file of F16 tensors given as raw 16-bit patterns, laid out by hand. */
  function f16File(entries: [name: string, shape: number[], h: number[]][]): Buffer {
    let offset = 0;
    const header: Record<string, unknown> = {};
    for (const [name, shape, h] of entries) header[name] = { dtype: 'F16', shape, data_offsets: [offset, (offset += 2 * h.length)] };
    const json = Buffer.from(JSON.stringify(header));
    const out = Buffer.alloc(8 + json.length + offset);
    out.writeBigUInt64LE(BigInt(json.length));
    json.copy(out, 8);
    let at = 8 + json.length;
    for (const [, , h] of entries) for (const x of h) at = out.writeUInt16LE(x, at);
    return out;
  }

  it('an F16 adapter loads exactly', async () => {
    const dir = freshDir();
    await saveAdapter(dir, { [Q]: layer(3, 2, 2, 40) });  // the config
    // 1, 0.5, -0.25, 2, 1.5, 2^-24 (a subnormal) in lora_A (r=2, I=3); 65504, -1, 0.75, 0 in lora_B (O=2, r=2).
    fs.writeFileSync(weightsFile(dir), f16File([
      [keyA(Q), [2, 3], [0x3c00, 0x3800, 0xb400, 0x4000, 0x3e00, 0x0001]],
      [keyB(Q), [2, 2], [0x7bff, 0xbc00, 0x3a00, 0x0000]],
    ]));
    const dst = { [Q]: layer(3, 2, 2, 41) };
    await loadAdapter(dir, dst);
    expect(dst[Q].lora.A.dataSync()).toEqual(transposed(new Float32Array([1, 0.5, -0.25, 2, 1.5, 2 ** -24]), 2, 3));
    expect(dst[Q].lora.B.dataSync()).toEqual(transposed(new Float32Array([65504, -1, 0.75, 0]), 2, 2));
  });
});

describe('a failed save leaves the old adapter intact', () => {
  it('a directory path that is a file is ERR_IO, and the file is untouched', async () => {
    const file = path.join(freshDir() + '.txt');
    fs.writeFileSync(file, 'keep me');
    await expect(saveAdapter(file, model(42))).rejects.toMatchObject({ code: 'ERR_IO' });
    await expect(saveAdapter(path.join(file, 'sub'), model(42))).rejects.toMatchObject({ code: 'ERR_IO' });
    expect(fs.readFileSync(file, 'utf8')).toBe('keep me');
  });

  it('a write that fails in the directory keeps the old files and leaves no temporary file', async () => {
    const dir = freshDir();
    const old = model(43);
    await saveAdapter(dir, old);
    fs.mkdirSync(path.join(dir, 'optimizer.safetensors'));  // the first file of the next save cannot be renamed into place
    const state = { kind: 'sgd', step: 1, hyper: {}, tensors: {} };
    const err = await saveAdapter(dir, model(44), { optimizer: { stateDict: () => state } }).catch((e) => e);
    expect(err).toMatchObject({ code: 'ERR_IO' });
    expect(fs.readdirSync(dir).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors', 'optimizer.safetensors']);
    const dst = model(45);
    await loadAdapter(dir, dst);
    expect(snapshot(dst)).toEqual(snapshot(old));
  });

  it('non-finite A or B is refused (ERR_NOT_FINITE) before anything is written', async () => {
    const dir = freshDir();
    const src = model(46);
    src[V].lora.A.buffer()[0] = Infinity;
    await expect(saveAdapter(dir, src)).rejects.toMatchObject({ code: 'ERR_NOT_FINITE' });
    expect(fs.existsSync(dir)).toBe(false);
  });

  it('what PEFT\'s config cannot express is refused (ERR_ARGUMENT): mixed rslora, ambiguous module paths', async () => {
    const dir = freshDir();
    await expect(saveAdapter(dir, { [Q]: layer(6, 5, 2, 47), [V]: layer(6, 3, 2, 48, { rslora: true }) })).rejects.toMatchObject({ code: 'ERR_ARGUMENT', message: /share rslora/ });
    // rank_pattern's "q_proj" would also match "x.q_proj", which has another rank.
    await expect(saveAdapter(dir, { 'a.k_proj': layer(6, 5, 2, 49), q_proj: layer(6, 5, 3, 50), 'x.q_proj': layer(6, 5, 2, 51) })).rejects.toMatchObject({ code: 'ERR_ARGUMENT', message: /x\.q_proj/ });
    expect(fs.existsSync(dir)).toBe(false);
  });

  it('bad arguments are refused', async () => {
    const dir = freshDir();
    await expect(saveAdapter(dir, {})).rejects.toMatchObject({ code: 'ERR_ARGUMENT' });
    await expect(saveAdapter(dir, { [Q]: new Linear(2, 2) as never })).rejects.toMatchObject({ code: 'ERR_ARGUMENT' });
    await expect(saveAdapter(dir, model(52), { dtype: 'F16' as never })).rejects.toMatchObject({ code: 'ERR_DTYPE' });
    await expect(saveAdapter(dir, model(52), { optimizer: {} as never })).rejects.toMatchObject({ code: 'ERR_ARGUMENT' });
    await expect(loadAdapter('', model(52))).rejects.toMatchObject({ code: 'ERR_ARGUMENT' });
    expect(fs.existsSync(dir)).toBe(false);
  });
});

describe('optimizer state', () => {
  class FakeOptimizer {
    loaded: OptimizerState | null = null;
    constructor(readonly state: OptimizerState, readonly refuse = false) {}
    stateDict(): OptimizerState {
      return this.state;
    }
    loadStateDict(s: OptimizerState): void {
      if (this.refuse) throw new LoraError('ERR_ARGUMENT', 'FakeOptimizer.loadStateDict: expected another kind');
      this.loaded = s;
    }
  }
  const state = (): OptimizerState => ({ kind: 'adamw', step: 12, hyper: { lr: 0.01, betas: [0.9, 0.999], eps: 1e-8 }, tensors: { '0.m': randomArray(12, 3), '0.v': randomArray(12, 4), '5.m': randomArray(18, 5) } });

  it('round-trips through loadAdapter, with the layers', async () => {
    const dir = freshDir();
    const saved = state();
    await saveAdapter(dir, model(60), { optimizer: new FakeOptimizer(saved) });
    const opt = new FakeOptimizer(state());
    const result = await loadAdapter(dir, model(61), { optimizer: opt });
    expect(result.optimizer).toBe(true);
    expect(opt.loaded).toEqual(saved);
  });

  it('an optimizer that refuses its state leaves every layer unchanged', async () => {
    const dir = freshDir();
    await saveAdapter(dir, model(62), { optimizer: new FakeOptimizer(state()) });
    const dst = model(63);
    await expectRefusedUnchanged(dst, loadAdapter(dir, dst, { optimizer: new FakeOptimizer(state(), true) }), 'ERR_ARGUMENT', /FakeOptimizer/);
  });

  it('a state left from an earlier save is refused (ERR_IO), not loaded with newer weights', async () => {
    const dir = freshDir();
    await saveAdapter(dir, model(64), { optimizer: new FakeOptimizer(state()) });
    await saveAdapter(dir, model(65));
    const dst = model(66);
    const opt = new FakeOptimizer(state());
    await expectRefusedUnchanged(dst, loadAdapter(dir, dst, { optimizer: opt }), 'ERR_IO', /another save/);
    expect(opt.loaded).toBeNull();
  });

  it('layers in another order than at save time are refused (ERR_ARGUMENT)', async () => {
    const dir = freshDir();
    await saveAdapter(dir, model(67), { optimizer: new FakeOptimizer(state()) });
    const m = model(68);
    const reordered = { [V]: m[V], [Q]: m[Q], [D]: m[D] };
    await expectRefusedUnchanged(reordered, loadAdapter(dir, reordered, { optimizer: new FakeOptimizer(state()) }), 'ERR_ARGUMENT', /modules the optimizer state was saved for/);
  });

  it('AdamW resumes: after save and load, the next step equals the uninterrupted run bit for bit', async () => {
    const dir = freshDir();
    const x = randomArray(4 * 6, 80), target = randomArray(4 * 5, 81);
    const setup = (seed: number) => {
      // The same frozen bases (the adapter does not hold them); different adapters and optimizers.
      const layers = {
        [Q]: new LinearLoRA(new Linear(6, 5, { seed: 1 }), 2, { seed, B: randomArray(2 * 5, seed) }),
        [V]: new LinearLoRA(new Linear(6, 5, { seed: 2 }), 3, { seed, alpha: 6 }),
      };
      const opt = new AdamW(Object.values(layers).flatMap((l) => l.parameters()), { lr: 0.01, weightDecay: 0.1 });
      return { layers, opt };
    };
    const step = ({ layers, opt }: ReturnType<typeof setup>) => {
      opt.zeroGrad();
      for (const l of Object.values(layers)) l.backward(mseLoss(l.forward(x), target).grad);
      opt.step();
    };
    const run = setup(82);
    step(run);
    step(run);
    await saveAdapter(dir, run.layers, { optimizer: run.opt });
    const resumed = setup(83);
    expect((await loadAdapter(dir, resumed.layers, { optimizer: resumed.opt })).optimizer).toBe(true);
    step(run);
    step(resumed);
    expect(snapshot(resumed.layers)).toEqual(snapshot(run.layers));
  });

  it('without optimizer.safetensors the layers load and the result says no state was restored', async () => {
    const dir = freshDir();
    await saveAdapter(dir, model(69));
    const opt = new FakeOptimizer(state());
    expect((await loadAdapter(dir, model(70), { optimizer: opt })).optimizer).toBe(false);
    expect(opt.loaded).toBeNull();
  });
});
