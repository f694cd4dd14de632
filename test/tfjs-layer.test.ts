// LoRADense in tfjs models, on the cpu and wasm backends: it computes the Dense plus the adapter
// with the activation after the sum, starts equal to its Dense, trains with model.fit and tf.train
// optimizers while the frozen kernel stays bit-identical, applies dropout in training only, saves
// and loads with the model (registered class), and leaks no tensor over 100 steps.
import * as tfl from '@tensorflow/tfjs-layers';
import { describe, expect, it } from 'vitest';
import { Linear, LinearLoRA } from '../lib/index';
import { LoRADense } from '../lib/tfjs/index';
import { randomArray, relErr } from './reference';
import { BACKENDS, tf, use } from './tfjs-setup';

const I = 24, H = 32, O = 6, r = 4;
let models = 0;

function loraModel(seed: number, options: { dropout?: number; activation?: 'relu' | 'linear' } = {}) {
  const hidden = new LoRADense({ layer: tfl.layers.dense({ units: H, inputShape: [I], activation: options.activation ?? 'relu', name: `fc${seed}_${++models}` }), rank: r, alpha: 8, seed, dropout: options.dropout });
  const model = tfl.sequential({ layers: [hidden, tfl.layers.dense({ units: O })] });
  return { model, hidden };
}

/** A regression task a LoRA of rank r can learn: targets from the model itself with a nudged first layer. */
function task(n: number, seed: number) {
  return { x: tf.tensor(randomArray(n * I, seed), [n, I]), y: tf.tensor(randomArray(n * O, seed + 1, 0.5), [n, O]) };
}

const bits = (t: tf.Tensor) => Buffer.from((t.dataSync() as Float32Array).slice().buffer);

describe.each(BACKENDS)('LoRADense on %s', (backend) => {
  it('computes activation(x·kernel + bias + scaling·(x·A)·B), and equals its Dense while B is zero', async () => {
    await use(backend);
    const { model, hidden } = loraModel(1);
    const x = tf.tensor(randomArray(5 * I, 3), [5, I]);
    const dense = hidden.dense;
    const [kernel, bias] = dense.getWeights();
    const plain = tf.relu(tf.add(tf.matMul(x, kernel), bias));
    const first = tfl.sequential({ layers: [tfl.layers.inputLayer({ inputShape: [I] }), hidden] });
    expect(relErr(first.predict(x) as tf.Tensor, plain)).toBeLessThan(1e-6);
    // A nonzero B: the LoRA term counts, inside the activation.
    hidden.loraB!.write(tf.tensor(randomArray(r * H, 9), [r, H]));
    const s = tf.matMul(tf.matMul(x, hidden.loraA!.read()), hidden.loraB!.read());
    const want = tf.relu(tf.add(tf.add(tf.matMul(x, kernel), bias), tf.mul(s, hidden.scaling)));
    expect(hidden.scaling).toBe(8 / r);
    expect(relErr((first.predict(x) as tf.Tensor).dataSync(), want.dataSync())).toBeLessThan(1e-5);
    tf.dispose([x, plain, s, want]);
    model.dispose();
  });

  it("runs a 'relu' Dense's activation inside the fused op (no tfjs Relu, Step or Multiply), with the gradients of tfjs's own layers", async () => {
    await use(backend);
    const { model, hidden } = loraModel(8);
    hidden.loraB!.write(tf.tensor(randomArray(r * H, 10), [r, H]));
    const first = tfl.sequential({ layers: [tfl.layers.inputLayer({ inputShape: [I] }), hidden] });
    const x = tf.tensor(randomArray(9 * I, 11), [9, I]), G = tf.tensor(randomArray(9 * H, 12), [9, H]);
    const [kernel, bias] = hidden.dense.getWeights();
    const A = hidden.loraA!.read(), B = hidden.loraB!.read();
    const loss = (f: (Av: tf.Tensor, Bv: tf.Tensor) => tf.Tensor) => tf.grads((Av: tf.Tensor, Bv: tf.Tensor) => tf.sum(tf.mul(f(Av, Bv), G)))([A, B]);
    const want = loss((Av, Bv) => tf.relu(tf.add(tf.add(tf.matMul(x, kernel), bias), tf.mul(tf.matMul(tf.matMul(x, Av), Bv), hidden.scaling))));
    let got: tf.Tensor[] = [];
    const profile = await tf.profile(() => {
      // The layer's own variables, differentiated through its call: what model.fit does.
      const { grads } = tf.variableGrads(() => tf.sum(tf.mul(first.apply(x, { training: true }) as tf.Tensor, G)) as tf.Scalar, [A as tf.Variable, B as tf.Variable]);
      got = [grads[A.name], grads[B.name]];
      return got;
    });
    const kernels = profile.kernels.map((k) => k.name);
    expect(kernels).toContain('FusedLoRALinearReLU');
    expect(kernels.filter((k) => ['Relu', 'Step'].includes(k))).toEqual([]);
    // The Multiplies left are the loss's own: y ⊙ G, and in its gradient the Sum's broadcast and dy ⊙ G.
    expect(kernels.filter((k) => k === 'Multiply').length).toBe(3);
    for (let i = 0; i < 2; i++) expect(relErr(got[i].dataSync(), want[i].dataSync()), ['dA', 'dB'][i]).toBeLessThan(1e-5);
    tf.dispose([x, G, ...want, ...got]);
    model.dispose();
  });

  it("starts A as a LinearLoRA of the same seed (kaiming-uniform U(±1/√I)), B at zero", async () => {
    await use(backend);
    const { hidden, model } = loraModel(77);
    model.predict(tf.zeros([1, I]));
    const ours = new LinearLoRA(new Linear(I, H), r, { seed: 77 });
    expect(hidden.loraA!.read().dataSync()).toEqual(ours.lora.A.dataSync());
    expect(hidden.loraB!.read().dataSync().every((v) => v === 0)).toBe(true);
    const A = hidden.loraA!.read().dataSync();
    expect(Math.max(...A.map(Math.abs))).toBeLessThanOrEqual(1 / Math.sqrt(I));
    model.dispose();
  });

  it('trains with model.fit: the loss falls, the frozen kernel and bias stay bit-identical, only A and B are trainable', async () => {
    await use(backend);
    const { model, hidden } = loraModel(2);
    model.layers[1].trainable = false;
    model.compile({ optimizer: tf.train.adam(0.01), loss: 'meanSquaredError' });
    expect(hidden.name).toBe(hidden.dense.name);
    expect(model.trainableWeights.map((w) => w.originalName)).toEqual([`${hidden.name}/lora_A`, `${hidden.name}/lora_B`]);
    expect(hidden.weights.map((w) => w.originalName)).toEqual([`${hidden.name}/lora_A`, `${hidden.name}/lora_B`, `${hidden.name}/kernel`, `${hidden.name}/bias`]);
    const frozen = hidden.dense.getWeights().map(bits);
    const { x, y } = task(64, 5);
    const history = await model.fit(x, y, { epochs: 30, batchSize: 16, verbose: 0, shuffle: false });
    const loss = history.history.loss as number[];
    expect(loss[loss.length - 1]).toBeLessThan(0.8 * loss[0]);
    expect(hidden.dense.getWeights().map(bits)).toEqual(frozen);
    tf.dispose([x, y]);
    model.dispose();
  });

  it('applies dropout in training only: predict is deterministic and dropout-free, a training call is not', async () => {
    await use(backend);
    const { model, hidden } = loraModel(3, { dropout: 0.5, activation: 'linear' });
    hidden.loraB!.write(tf.tensor(randomArray(r * H, 4), [r, H]));
    const x = tf.tensor(randomArray(8 * I, 6), [8, I]);
    const evalA = hidden.apply(x) as tf.Tensor, evalB = hidden.apply(x, { training: false }) as tf.Tensor;
    const train1 = hidden.apply(x, { training: true }) as tf.Tensor, train2 = hidden.apply(x, { training: true }) as tf.Tensor;
    expect(bits(evalA)).toEqual(bits(evalB));
    const noDropout = tf.add(tf.add(tf.matMul(x, hidden.dense.getWeights()[0]), hidden.dense.getWeights()[1]), tf.mul(tf.matMul(tf.matMul(x, hidden.loraA!.read()), hidden.loraB!.read()), hidden.scaling));
    expect(relErr(evalA.dataSync(), noDropout.dataSync())).toBeLessThan(1e-5);
    expect(relErr(train1.dataSync(), evalA.dataSync())).toBeGreaterThan(1e-3);
    // Each training call draws a new mask.
    expect(relErr(train2.dataSync(), train1.dataSync())).toBeGreaterThan(1e-3);
    tf.dispose([x, evalA, evalB, train1, train2, noDropout]);
    model.dispose();
  });

  it('saves and loads with the model (an in-memory IOHandler): the registered class comes back with every weight and the same outputs', async () => {
    await use(backend);
    const { model, hidden } = loraModel(4);
    hidden.loraB!.write(tf.tensor(randomArray(r * H, 8), [r, H]));
    let saved: tf.io.ModelArtifacts | null = null;
    await model.save(tf.io.withSaveHandler(async (artifacts) => {
      saved = artifacts;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }));
    const loaded = await tfl.loadLayersModel(tf.io.fromMemory(saved!));
    const back = loaded.layers[0] as LoRADense;
    expect(back).toBeInstanceOf(LoRADense);
    expect(back.getConfig()).toEqual(hidden.getConfig());
    expect(back.weights.map((w) => w.originalName)).toEqual(hidden.weights.map((w) => w.originalName));
    const x = tf.tensor(randomArray(3 * I, 12), [3, I]);
    expect(bits(loaded.predict(x) as tf.Tensor)).toEqual(bits(model.predict(x) as tf.Tensor));
    tf.dispose(x);
    model.dispose();
    loaded.dispose();
  });

  it('runs on inputs of rank 3 (batch, tokens, features), as Dense does', async () => {
    await use(backend);
    const dense = tfl.layers.dense({ units: H });
    const lora = new LoRADense({ layer: dense, rank: r, seed: 5 });
    const x = tf.tensor(randomArray(2 * 3 * I, 13), [2, 3, I]);
    const y = lora.apply(x) as tf.Tensor;
    expect(y.shape).toEqual([2, 3, H]);
    expect(lora.computeOutputShape([null, 3, I])).toEqual([null, 3, H]);
    const [kernel, bias] = dense.getWeights();
    expect(relErr(y.dataSync(), tf.add(tf.reshape(tf.matMul(tf.reshape(x, [6, I]), kernel), [2, 3, H]), bias).dataSync())).toBeLessThan(1e-5);
    tf.dispose([x, y]);
    lora.dispose();
  });

  it('leaks no tensor over 100 training steps (model.fit, then tf.train.sgd on the adapter)', async () => {
    await use(backend);
    const { model, hidden } = loraModel(6, { dropout: 0.1 });
    model.compile({ optimizer: tf.train.adam(0.01), loss: 'meanSquaredError' });
    const { x, y } = task(16, 7);
    // A first step creates the optimizer's moments; what follows must hold the count.
    await model.fit(x, y, { epochs: 1, batchSize: 16, verbose: 0 });
    const before = tf.memory().numTensors;
    await model.fit(x, y, { epochs: 100, batchSize: 16, verbose: 0 });
    expect(tf.memory().numTensors).toBe(before);
    const sgd = tf.train.sgd(0.01);
    const vars = [hidden.loraA!.read() as tf.Variable, hidden.loraB!.read() as tf.Variable];
    const step = () => sgd.minimize(() => tf.losses.meanSquaredError(y, model.apply(x, { training: true }) as tf.Tensor) as tf.Scalar, false, vars);
    step();
    const before2 = tf.memory().numTensors;
    for (let i = 0; i < 100; i++) step();
    expect(tf.memory().numTensors).toBe(before2);
    tf.dispose([x, y]);
    sgd.dispose();
    model.dispose();
  });
});
