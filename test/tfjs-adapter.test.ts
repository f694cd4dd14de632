// applyLoRA on tfjs models and their adapters in PEFT's format: the targeted Dense layers become
// LoRADense in a new model that shares the old weights, the rest is frozen; saveAdapter writes the
// same files as for LinearLoRA; loadAdapter brings them back into another model; and a LinearLoRA
// over the same frozen weight (transposed: nn.Linear's (O, I)) loads them and computes the same.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tfl from '@tensorflow/tfjs-layers';
import { describe, expect, it } from 'vitest';
import { Linear, LinearLoRA, readSafetensors, tensor } from '../lib/index';
import { applyLoRA, loadAdapter, LoRADense, saveAdapter } from '../lib/tfjs/index';
import { message } from './expect-code';
import { randomArray, relErr } from './reference';
import { tf, use } from './tfjs-setup';

const I = 16, H = 20, O = 5;

/** A functional model: q and v projections side by side, added, a head on top. */
function baseModel(): tfl.LayersModel {
  const input = tfl.input({ shape: [I] });
  const q = tfl.layers.dense({ units: H, name: 'q_proj' }).apply(input) as tfl.SymbolicTensor;
  const v = tfl.layers.dense({ units: H, name: 'v_proj', activation: 'tanh' }).apply(input) as tfl.SymbolicTensor;
  const sum = tfl.layers.add().apply([q, v]) as tfl.SymbolicTensor;
  const out = tfl.layers.dense({ units: O, name: 'head' }).apply(sum) as tfl.SymbolicTensor;
  return tfl.model({ inputs: input, outputs: out });
}

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'fused-lora-tfjs-'));
const x = () => tf.tensor(randomArray(7 * I, 21), [7, I]);
const predict = (m: tfl.LayersModel) => tf.tidy(() => (m.predict(x()) as tf.Tensor).dataSync());

/** B made nonzero, so an adapter changes the output. */
function nudge(layers: Record<string, LoRADense>, seed: number): void {
  for (const [i, l] of Object.values(layers).entries()) l.loraB!.write(tf.tensor(randomArray(l.rank * H, seed + i, 0.3), [l.rank, H]));
}

describe('applyLoRA on a tfjs model', () => {
  it('wraps the targeted Dense layers by name, in a new model that starts equal to the old one and shares its weights', async () => {
    await use('wasm');
    const model = baseModel();
    const { model: lora, layers } = applyLoRA(model, { targets: ['q_proj', 'v_proj'], rank: 4, alpha: 8, seed: 1 });
    expect(Object.keys(layers)).toEqual(['q_proj', 'v_proj']);
    expect(lora.getLayer('q_proj')).toBeInstanceOf(LoRADense);
    expect(lora.getLayer('head')).not.toBeInstanceOf(LoRADense);
    expect(relErr(predict(lora), predict(model))).toBeLessThan(1e-6);
    // The same memory: tfjs variables share a tensor's data by reference.
    expect(layers.q_proj.dense.getWeights()[0].dataId).toBe(model.getLayer('q_proj').getWeights()[0].dataId);
    // As PEFT: only the adapters train; each layer has its own seed.
    expect(lora.trainableWeights.map((w) => w.originalName)).toEqual(['q_proj/lora_A', 'q_proj/lora_B', 'v_proj/lora_A', 'v_proj/lora_B']);
    expect(layers.q_proj.seed).not.toBe(layers.v_proj.seed);
    expect(model.getLayer('head').trainable).toBe(true);
  });

  it('matches names as PEFT target_modules (a name or a RegExp); every Dense by default; none is an error', async () => {
    await use('cpu');
    expect(Object.keys(applyLoRA(baseModel(), { rank: 2 }).layers)).toEqual(['q_proj', 'v_proj', 'head']);
    expect(Object.keys(applyLoRA(baseModel(), { rank: 2, targets: /_proj$/ }).layers)).toEqual(['q_proj', 'v_proj']);
    expect(message(() => applyLoRA(baseModel(), { rank: 2, targets: ['k_proj'] }))).toBe(
      'ERR_ARGUMENT applyLoRA: expected a match for at least one Dense layer of the model for options.targets but received ["k_proj"]');
    expect(message(() => applyLoRA(baseModel(), { rank: 2, targtes: ['q_proj'] } as never))).toMatch(/for options\.targtes but received an unknown key \(did you mean 'targets'\?\)/);
    expect(message(() => applyLoRA({} as never, { rank: 2 }))).toMatch(/^ERR_ARGUMENT applyLoRA: expected a tfjs LayersModel/);
    expect(message(() => applyLoRA(baseModel(), { rank: 0 }))).toMatch(/^ERR_SHAPE applyLoRA: expected an integer in \[1, 2\^31 - 1\] for options\.rank/);
  });

  it('a tf.sequential too; the result trains with model.fit and its frozen layers stay bit-identical', async () => {
    await use('wasm');
    const seq = tfl.sequential({ layers: [tfl.layers.dense({ units: H, inputShape: [I], activation: 'relu', name: 'fc' }), tfl.layers.dense({ units: O, name: 'out' })] });
    const { model, layers } = applyLoRA(seq, { targets: ['fc'], rank: 3, seed: 4 });
    const frozen = [...layers.fc.dense.getWeights(), ...model.getLayer('out').getWeights()].map((t) => Buffer.from(t.dataSync().slice().buffer));
    model.compile({ optimizer: tf.train.adam(0.02), loss: 'meanSquaredError' });
    const xs = tf.tensor(randomArray(32 * I, 5), [32, I]), ys = tf.tensor(randomArray(32 * O, 6), [32, O]);
    const loss = (await model.fit(xs, ys, { epochs: 20, batchSize: 8, verbose: 0 })).history.loss as number[];
    expect(loss[loss.length - 1]).toBeLessThan(0.9 * loss[0]);
    expect([...layers.fc.dense.getWeights(), ...model.getLayer('out').getWeights()].map((t) => Buffer.from(t.dataSync().slice().buffer))).toEqual(frozen);
  });
});

describe("a tfjs model's adapters in PEFT's format", () => {
  it('saveAdapter writes the files it writes for LinearLoRA: lora_A (r, I), lora_B (O, r), the config with r, alpha and the targets', async () => {
    await use('cpu');
    const { layers } = applyLoRA(baseModel(), { targets: ['q_proj', 'v_proj'], rank: 4, alpha: 8, seed: 2 });
    nudge(layers, 30);
    const dir = tmp();
    await saveAdapter(dir, layers, { baseModel: 'tfjs-test' });
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
    expect(config).toMatchObject({ peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['q_proj', 'v_proj'], base_model_name_or_path: 'tfjs-test', fan_in_fan_out: false });
    const st = await readSafetensors(path.join(dir, 'adapter_model.safetensors'));
    expect(st.tensors['base_model.model.q_proj.lora_A.weight'].shape).toEqual([4, I]);
    expect(st.tensors['base_model.model.q_proj.lora_B.weight'].shape).toEqual([H, 4]);
    // lora_A.weight is Aᵀ of the layer's A (I, r).
    const A = layers.q_proj.loraA!.read().dataSync();
    expect(st.tensors['base_model.model.q_proj.lora_A.weight'].data[1 * I + 3]).toBe(A[3 * 4 + 1]);
  });

  it('loadAdapter brings them into another model of the same base: the same outputs, on either backend', async () => {
    await use('cpu');
    const base = baseModel();
    const trained = applyLoRA(base, { targets: ['q_proj', 'v_proj'], rank: 4, alpha: 8, seed: 2 });
    nudge(trained.layers, 40);
    const dir = tmp();
    await saveAdapter(dir, trained.layers);
    const want = predict(trained.model);
    await use('wasm');
    const fresh = applyLoRA(base, { targets: ['q_proj', 'v_proj'], rank: 4, alpha: 2, seed: 9 });
    expect(relErr(predict(fresh.model), want)).toBeGreaterThan(1e-3);
    const res = await loadAdapter(dir, fresh.layers);
    expect(res.modules).toEqual(['q_proj', 'v_proj']);
    expect(fresh.layers.q_proj.alpha).toBe(8);
    expect(relErr(predict(fresh.model), want)).toBeLessThan(1e-6);
  });

  it('a LinearLoRA over the same frozen weight (as nn.Linear keeps it, (O, I)) loads the adapter and gives the same outputs', async () => {
    await use('cpu');
    const dense = tfl.layers.dense({ units: H, name: 'proj' });
    const layer = new LoRADense({ layer: dense, rank: 3, alpha: 6, seed: 3 });
    const xs = x();
    layer.apply(xs);
    nudge({ proj: layer }, 50);
    const want = (layer.apply(xs) as tf.Tensor).dataSync();
    const dir = tmp();
    await saveAdapter(dir, { proj: layer });
    const [kernel, bias] = dense.getWeights();
    const weight = tf.transpose(kernel).dataSync() as Float32Array;
    const ours = new LinearLoRA(new Linear(I, H, { weight, bias: bias.dataSync() as Float32Array }), 3, { seed: 99 });
    await loadAdapter(dir, { proj: ours });
    expect(ours.scaling).toBe(2);
    const got = ours.forward(tensor(xs.dataSync() as Float32Array, [7, I])).dataSync();
    expect(relErr(got, want)).toBeLessThan(1e-5);
  });

  it('refuses a LoRADense not built yet, naming it, and writes nothing', async () => {
    await use('cpu');
    const layer = new LoRADense({ layer: tfl.layers.dense({ units: 3 }), rank: 2 });
    const dir = path.join(tmp(), 'never');
    await expect(saveAdapter(dir, { fc: layer })).rejects.toThrow(/^saveAdapter: expected a built LoRADense \(call it on an input, or put it in a model, first\) for layers\["fc"\] but received one not built yet$/);
    expect(fs.existsSync(dir)).toBe(false);
    await expect(loadAdapter(dir, { fc: layer })).rejects.toThrow(/^loadAdapter: expected a built LoRADense .* for layers\["fc"\] but received one not built yet$/);
  });
});
