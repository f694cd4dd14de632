// Option typos are errors, everywhere in the public API. A key a call does not take (whatever its
// value, undefined too) is ERR_ARGUMENT naming the call, the key, the keys the call takes and the
// nearest of them; the refused call changes nothing, so the layer, the model and the optimizer train
// on afterwards exactly as if it had never been made. And every option the README shows is taken.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AdamW, applyLoRA, clipGradNorm, crossEntropyLoss, GELU, Linear, LinearLoRA, loadAdapter, loadSafetensors, LoRA, LoraError,
  mseLoss, MultiLoRALinear, ops, readSafetensors, ReLU, saveAdapter, Sequential, SGD, Tensor, tensor, writeSafetensors, zeros,
} from '../lib/index';
import { parseModelSpec } from '../lib/cli/model-spec';
import { checkTrainingJob, createTrainingWorker, enqueueTraining } from '../lib/workers/index';
import * as tfc from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import * as tfl from '@tensorflow/tfjs-layers';
import { applyLoRA as tfjsApplyLoRA, loraLinear, LoRADense } from '../lib/tfjs/index';
import { useFakeCuda } from './fixtures/fake-cuda-env';

const M = 2, I = 4, O = 3, r = 2, C = 2;
const seq = (n: number, f: (i: number) => number) => Float32Array.from({ length: n }, (_, i) => f(i));
const W0 = seq(O * I, (i) => 0.4 * Math.sin(i + 1)), b0 = seq(O, (i) => 0.1 * i);
const A0 = seq(I * r, (i) => 0.3 * Math.cos(i)), B0 = seq(r * O, (i) => 0.2 * Math.sin(2 * i + 1));
const H0 = seq(C * O, (i) => 0.5 * Math.cos(i + 2));
const X = () => tensor(seq(M * I, (i) => Math.sin(0.7 * i) + 0.1), [M, I]);
const DY = () => tensor(seq(M * C, (i) => 0.3 * Math.cos(1.1 * i)), [M, C]);

/** The message an unknown key gets: the one shape every call shares. */
function unknownKey(where: string, arg: string, keys: string, key: string, near: string | null): string {
  return `ERR_ARGUMENT ${where}: expected ${arg ? `${arg} ` : ''}keys among ${keys} for ${arg ? `${arg}.` : ''}${key} but received an unknown key${near ? ` (did you mean '${near}'?)` : ''}`;
}

/** "<code> <message>" of the LoraError that `run` throws or rejects with. */
async function refusal(run: () => unknown): Promise<string> {
  try {
    await run();
  } catch (e) {
    expect(e).toBeInstanceOf(LoraError);
    return `${(e as LoraError).code} ${(e as LoraError).message}`;
  }
  throw new Error('expected a refusal');
}

/** The message `run` fails with, or '' when it succeeds. */
async function outcome(run: () => unknown): Promise<string> {
  try {
    await run();
    return '';
  } catch (e) {
    return (e as Error).message;
  }
}

const tmp: string[] = [];
function tmpDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'fused-lora-options-'));
  tmp.push(d);
  return d;
}
afterAll(() => { for (const d of tmp) fs.rmSync(d, { recursive: true, force: true }); });

/**
 * A small model mid-training: fc (a LinearLoRA) → ReLU → head (frozen), with AdamW over fc, after
 * one forward and backward (so a forward is saved and the gradients are not zero); plus a plain
 * model for applyLoRA.
 */
function world() {
  const fc = new LinearLoRA(new Linear(I, O, { weight: W0, bias: b0 }), r, { A: A0, B: B0, alpha: 4 });
  const act = new ReLU();
  const model = new Sequential({ fc, act, head: new Linear(O, C, { weight: H0 }) });
  const opt = new AdamW(model.parameters(), { lr: 0.05 });
  model.forward(X());
  model.backward(DY());
  const plain = new Sequential({ a: new Linear(I, O, { seed: 1 }), b: new Linear(O, C, { seed: 2 }) });
  return { fc, act, model, opt, plain, y: zeros([M, O]), dx: zeros([M, I]) };
}
type World = ReturnType<typeof world>;

/**
 * What the world computes from here: a second backward of the saved forward, a clipped step, a new
 * forward, and the shape of the plain model. Equal to a fresh world's when a refused call changed nothing.
 */
function trainOn(w: World) {
  w.model.backward(DY());
  clipGradNorm(w.model.parameters(), 0.5);
  w.opt.step();
  const y = w.model.forward(X()).dataSync();
  return {
    y, A: w.fc.lora.A.dataSync(), B: w.fc.lora.B.dataSync(), dA: w.fc.lora.A.grad!.dataSync(), dB: w.fc.lora.B.grad!.dataSync(),
    scaling: w.fc.scaling, steps: w.opt.stepCount, lr: w.opt.lr,
    plain: w.plain.namedModules().map(([p, l]) => `${p}: ${l.constructor.name}`),
  };
}

const LINEAR_LORA = 'alpha, rslora, dropout, fused, seed, A, B, checkFinite';
const MULTI_ADAPTER = 'rank, alpha, rslora, dropout, seed, A, B';
/** A MultiLoRALinear of one adapter 'a', and one after a forward (so a backward may follow). */
const multi = () => new MultiLoRALinear(new Linear(I, O, { weight: W0 }), { adapters: { a: { rank: r, A: A0, B: B0 } } });
const stepped = () => {
  const l = multi();
  l.forward(X(), { adapterNames: ['a', '__base__'] });
  return l;
};
const operands = () => ({ x: X(), weight: tensor(W0, [O, I]), A: tensor(A0, [I, r]), B: tensor(B0, [r, O]), scaling: 2 });
const backOperands = () => {
  const { x, weight, A, B, scaling } = operands();
  const { s } = ops.loraForward({ x, weight, A, B, scaling });
  return { x, s, dy: zeros([M, O]), weight, A, B, scaling };
};

let savedDir = '';
beforeAll(async () => {
  savedDir = tmpDir();
  const w = world();  // trained on and rescaled, so that loading it would change any world
  w.opt.step();
  w.fc.lora.configure({ alpha: 6 });
  await saveAdapter(savedDir, { fc: w.fc }, { optimizer: w.opt });
});

// [the call, the message, the call with a typo in its options]
type Case = [string, string, (w: World) => unknown];
const cases: Case[] = [
  ['tensor()', unknownKey('tensor', 'options', 'dtype, device', 'dtpye', 'dtype'), () => tensor([1, 2], [2], { dtpye: 'float32' } as never)],
  ['zeros()', unknownKey('zeros', 'options', 'dtype, device', 'devcie', 'device'), () => zeros([2], { devcie: 'cpu' } as never)],
  ['Tensor.to', unknownKey('Tensor.to', 'options', 'dtype', 'dtyp', 'dtype'), () => zeros([2]).to('cpu', { dtyp: 'float32' } as never)],
  ['new Linear (no option near)', unknownKey('Linear', 'options', 'weight, bias, seed, device, dtype, math, quantize', 'precision', null), () => new Linear(I, O, { precision: 'nf4' } as never)],
  ['new Linear', unknownKey('Linear', 'options', 'weight, bias, seed, device, dtype, math, quantize', 'wieght', 'weight'), () => new Linear(I, O, { wieght: W0 } as never)],
  ['new Linear (quantize)', unknownKey('Linear', 'options', 'weight, bias, seed, device, dtype, math, quantize', 'quantise', 'quantize'), () => new Linear(I, O, { quantise: 'nf4' } as never)],
  ['LinearLoRA.merge', unknownKey('LinearLoRA.merge', 'options', 'requantize', 'requantise', 'requantize'), (w) => w.fc.merge({ requantise: true } as never)],
  ['LinearLoRA.unmerge', unknownKey('LinearLoRA.unmerge', 'options', 'requantize', 'requantise', 'requantize'), (w) => w.fc.unmerge({ requantise: true } as never)],
  ['Linear.forward', unknownKey('Linear.forward', 'options', 'out', 'ot', 'out'), (w) => new Linear(I, O).forward(X(), { ot: w.y } as never)],
  ['Linear.backward', unknownKey('Linear.backward', 'options', 'out', 'output', null), (w) => new Linear(I, O).backward(zeros([M, O]), { output: w.dx } as never)],
  ['Linear.forwardAsync', unknownKey('Linear.forwardAsync', 'options', 'out', 'signal', null), () => new Linear(I, O).forwardAsync(X(), { signal: new AbortController().signal } as never)],
  ['Linear.backwardAsync', unknownKey('Linear.backwardAsync', 'options', 'out', 'Out', 'out'), (w) => new Linear(I, O).backwardAsync(zeros([M, O]), { Out: w.dx } as never)],
  ['new LoRA', unknownKey('LoRA', 'options', 'alpha, rslora, seed, A, B, device', 'rsLora', 'rslora'), () => new LoRA(I, O, r, { rsLora: true } as never)],
  ['LoRA.configure', unknownKey('LoRA.configure', 'options', 'alpha, rslora', 'alpah', 'alpha'), (w) => w.fc.lora.configure({ alpah: 16 } as never)],
  ['new LinearLoRA', unknownKey('LinearLoRA', 'options', LINEAR_LORA, 'alhpa', 'alpha'), () => new LinearLoRA(new Linear(I, O), r, { alhpa: 8, dropuot: 0.1 } as never)],
  ['new LinearLoRA (a typo with the value undefined)', unknownKey('LinearLoRA', 'options', LINEAR_LORA, 'dropuot', 'dropout'), () => new LinearLoRA(new Linear(I, O), r, { dropuot: undefined } as never)],
  ['LinearLoRA.forward (signal is for the async calls)', unknownKey('LinearLoRA.forward', 'options', 'out', 'signal', null), (w) => w.fc.forward(X(), { out: w.y, signal: new AbortController().signal } as never)],
  ['LinearLoRA.forwardAsync', unknownKey('LinearLoRA.forwardAsync', 'options', 'out, signal', 'sigal', 'signal'), (w) => w.fc.forwardAsync(X(), { sigal: new AbortController().signal } as never)],
  ['LinearLoRA.backward', unknownKey('LinearLoRA.backward', 'options', 'out, inputGrad', 'inputgrad', 'inputGrad'), (w) => w.fc.backward(zeros([M, O]), { inputgrad: false } as never)],
  ['LinearLoRA.backwardAsync', unknownKey('LinearLoRA.backwardAsync', 'options', 'out, inputGrad, signal', 'input_grad', 'inputGrad'), (w) => w.fc.backwardAsync(zeros([M, O]), { input_grad: false } as never)],
  ['ReLU.backward', unknownKey('ReLU.backward', 'options', 'inputGrad', 'inputGrads', 'inputGrad'), (w) => w.act.backward(zeros([M, O]), { inputGrads: false } as never)],
  ['GELU.backward', unknownKey('GELU.backward', 'options', 'inputGrad', 'inptGrad', 'inputGrad'), () => { const g = new GELU(); g.forward(X()); return g.backward(X(), { inptGrad: false } as never); }],
  ['Sequential.backward', unknownKey('Sequential.backward', 'options', 'inputGrad', 'out', null), (w) => w.model.backward(DY(), { inputGrad: false, out: w.dx } as never)],
  ['applyLoRA', unknownKey('applyLoRA', 'options', `${LINEAR_LORA}, rank, targets, adapters, quantize`, 'target', 'targets'), (w) => applyLoRA(w.plain, { rank: r, target: ['a'] } as never)],
  ['applyLoRA (with adapters)', unknownKey('applyLoRA', 'options', `${LINEAR_LORA}, rank, targets, adapters, quantize`, 'adaptors', 'adapters'), (w) => applyLoRA(w.plain, { adaptors: { a: { rank: r } } } as never)],
  ['applyLoRA (an adapter\'s options)', unknownKey('MultiLoRALinear', 'options.adapters["a"]', MULTI_ADAPTER, 'rnak', 'rank'), (w) => applyLoRA(w.plain, { adapters: { a: { rank: r, rnak: 2 } } } as never)],
  ['new MultiLoRALinear', unknownKey('MultiLoRALinear', 'options', 'adapters', 'adapter', 'adapters'), () => new MultiLoRALinear(new Linear(I, O), { adapter: { a: { rank: r } } } as never)],
  ['new MultiLoRALinear (an adapter\'s options)', unknownKey('MultiLoRALinear', 'options.adapters["a"]', MULTI_ADAPTER, 'rslor', 'rslora'), () => new MultiLoRALinear(new Linear(I, O), { adapters: { a: { rank: r, rslor: true } } } as never)],
  ['MultiLoRALinear.addAdapter', unknownKey('MultiLoRALinear.addAdapter', 'options', MULTI_ADAPTER, 'dropuot', 'dropout'), () => multi().addAdapter('b', { rank: r, dropuot: 0.1 } as never)],
  ['MultiLoRALinear.forward', unknownKey('MultiLoRALinear.forward', 'options', 'out, adapterNames', 'adapter_names', 'adapterNames'), () => multi().forward(X(), { adapter_names: ['a', 'a'] } as never)],
  ['MultiLoRALinear.forwardAsync', unknownKey('MultiLoRALinear.forwardAsync', 'options', 'out, adapterNames, signal', 'sigal', 'signal'), () => multi().forwardAsync(X(), { adapterNames: ['a', 'a'], sigal: null } as never)],
  ['MultiLoRALinear.backward', unknownKey('MultiLoRALinear.backward', 'options', 'out, inputGrad', 'inputgrad', 'inputGrad'), () => stepped().backward(zeros([M, O]), { inputgrad: false } as never)],
  ['MultiLoRALinear.backwardAsync', unknownKey('MultiLoRALinear.backwardAsync', 'options', 'out, inputGrad, signal', 'input_grad', 'inputGrad'), () => stepped().backwardAsync(zeros([M, O]), { input_grad: false } as never)],
  ['Sequential.forward', unknownKey('Sequential.forward', 'options', 'adapterNames', 'adapterName', 'adapterNames'), (w) => w.model.forward(X(), { adapterName: ['a', 'a'] } as never)],
  ['saveAdapter (with adapter, writes nothing)', unknownKey('saveAdapter', 'options', 'baseModel, dtype, optimizer, adapter', 'adapters', 'adapter'), async () => {
    const dir = tmpDir();
    try {
      return await saveAdapter(dir, { fc: multi() }, { adapters: 'a' } as never);
    } finally {
      expect(fs.readdirSync(dir)).toEqual([]);
    }
  }],
  ['new SGD', unknownKey('SGD', 'options', 'lr, momentum, dampening, weightDecay, nesterov', 'weight_decay', 'weightDecay'), (w) => new SGD(w.fc.parameters(), { lr: 0.1, weight_decay: 0.01 } as never)],
  ['new AdamW', unknownKey('AdamW', 'options', 'lr, betas, eps, weightDecay', 'lrr', 'lr'), (w) => new AdamW(w.fc.parameters(), { lrr: 0.01 } as never)],
  ['new AdamW (betas by another name)', unknownKey('AdamW', 'options', 'lr, betas, eps, weightDecay', 'beta1', 'betas'), (w) => new AdamW(w.fc.parameters(), { beta1: 0.8 } as never)],
  ['AdamW.loadStateDict (its hyper)', unknownKey('AdamW.loadStateDict', 'state.hyper', 'lr, betas, eps, weightDecay', 'amsgrad', null), (w) => {
    const s = w.opt.stateDict();
    return w.opt.loadStateDict({ ...s, hyper: { ...s.hyper, lr: 1, amsgrad: true } as never });
  }],
  ['SGD.loadStateDict (its hyper)', unknownKey('SGD.loadStateDict', 'state.hyper', 'lr, momentum, dampening, weightDecay, nesterov', 'momentun', 'momentum'), (w) => {
    const sgd = new SGD(w.fc.parameters(), { lr: 0.1 });
    const s = sgd.stateDict();
    return sgd.loadStateDict({ ...s, hyper: { ...s.hyper, momentun: 0.9 } as never });
  }],
  ['clipGradNorm', unknownKey('clipGradNorm', 'options', 'errorIfNonfinite', 'errorIfNonFinite', 'errorIfNonfinite'), (w) => clipGradNorm(w.model.parameters(), 1e-3, { errorIfNonFinite: true } as never)],
  ['mseLoss', unknownKey('mseLoss', 'options', 'out', 'reduction', null), () => mseLoss(zeros([2]), zeros([2]), { reduction: 'sum' } as never)],
  ['crossEntropyLoss', unknownKey('crossEntropyLoss', 'options', 'out', 'ignoreIndex', null), () => crossEntropyLoss(zeros([2, 3]), [0, 1], { ignoreIndex: 1 } as never)],
  ['ops.loraForward', unknownKey('ops.loraForward', 'input', 'x, weight, bias, A, B, scaling, M, I, O, r, fused, fanInFanOut, dropout, out', 'bais', 'bias'), () => ops.loraForward({ ...operands(), bais: zeros([O]) } as never)],
  ['ops.loraForwardAsync', unknownKey('ops.loraForwardAsync', 'input', 'x, weight, bias, A, B, scaling, M, I, O, r, fused, fanInFanOut, dropout, out', 'Fused', 'fused'), () => ops.loraForwardAsync({ ...operands(), Fused: false } as never)],
  ['ops.loraBackward', unknownKey('ops.loraBackward', 'input', 'x, s, dy, weight, A, B, scaling, M, I, O, r, fused, fanInFanOut, dropout, inputGrad, out', 'scalling', 'scaling'), () => {
    const { scaling, ...rest } = backOperands();
    return ops.loraBackward({ ...rest, scalling: scaling } as never);
  }],
  ['ops.loraBackwardAsync', unknownKey('ops.loraBackwardAsync', 'input', 'x, s, dy, weight, A, B, scaling, M, I, O, r, fused, fanInFanOut, dropout, inputGrad, out', 'accumulate', null), () => ops.loraBackwardAsync({ ...backOperands(), accumulate: true } as never)],
  ['saveAdapter (writes nothing)', unknownKey('saveAdapter', 'options', 'baseModel, dtype, optimizer, adapter', 'base_model', 'baseModel'), async (w) => {
    const dir = tmpDir();
    try {
      return await saveAdapter(dir, { fc: w.fc }, { base_model: 'm', optimizer: w.opt } as never);
    } finally {
      expect(fs.readdirSync(dir)).toEqual([]);
    }
  }],
  // Refused before BullMQ is loaded or any connection is made.
  ['createTrainingWorker', unknownKey('createTrainingWorker', 'options', 'connection, queue, concurrency, batchAdapters, maxBatchRows, checkpointEvery, lockDuration, stalledInterval, log, prefix', 'checkpoint_every', 'checkpointEvery'),
    () => createTrainingWorker({ connection: { host: '127.0.0.1', port: 1 }, queue: 'q', checkpoint_every: 10 } as never)],
  ['a training job (what enqueueTraining and the workers check)', unknownKey('worker', 'job', 'model, data, out, steps, batchSize, lr, seed, dtype, quantize', 'batch_size', 'batchSize'),
    () => checkTrainingJob('worker', { model: 'm.json', data: 'd.jsonl', out: 'o', batch_size: 4 })],
  ['loadAdapter', unknownKey('loadAdapter', 'options', 'optimizer, adapter', 'optimiser', 'optimizer'), (w) => loadAdapter(savedDir, { fc: w.fc }, { optimiser: w.opt } as never)],
  ['readSafetensors', unknownKey('readSafetensors', 'options', 'select', 'filter', null), () => readSafetensors(path.join(savedDir, 'adapter_model.safetensors'), { filter: () => true } as never)],
  ['loadSafetensors', unknownKey('loadSafetensors', 'options', 'select, dtype', 'selct', 'select'), () => loadSafetensors(path.join(savedDir, 'adapter_model.safetensors'), { selct: () => true } as never)],
  ['writeSafetensors (writes nothing)', unknownKey('writeSafetensors', 'options', 'dtype, metadata', 'dtpye', 'dtype'), async () => {
    const dir = tmpDir();
    try {
      return await writeSafetensors(path.join(dir, 'w.safetensors'), { w: { data: W0, shape: [O, I] } }, { dtpye: 'BF16' } as never);
    } finally {
      expect(fs.readdirSync(dir)).toEqual([]);
    }
  }],
];

describe('a key a call does not take', () => {
  it('is ERR_ARGUMENT naming the call, the key, the keys the call takes and the one it most likely meant', () => {
    const base = new Linear(4, 3);
    let err: unknown;
    try {
      new LinearLoRA(base, 2, { alhpa: 8, dropuot: 0.1 } as never);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(LoraError);
    expect((err as LoraError).code).toBe('ERR_ARGUMENT');
    expect((err as LoraError).message).toBe(`LinearLoRA: expected options keys among ${LINEAR_LORA} for options.alhpa but received an unknown key (did you mean 'alpha'?)`);
  });

  it('suggests across case, _ and -, and one or two edits; not for a key that is far from every known one', async () => {
    const lora = (o: object) => refusal(() => new LinearLoRA(new Linear(I, O), r, o as never));
    expect(await lora({ CheckFinite: true })).toMatch(/options\.CheckFinite .*\(did you mean 'checkFinite'\?\)$/);
    expect(await lora({ check_finite: true })).toMatch(/\(did you mean 'checkFinite'\?\)$/);
    expect(await lora({ 'check-finite': true })).toMatch(/for options\["check-finite"\] .*\(did you mean 'checkFinite'\?\)$/);
    expect(await lora({ sead: 1 })).toMatch(/\(did you mean 'seed'\?\)$/);
    expect(await lora({ a: A0 })).toMatch(/\(did you mean 'A'\?\)$/);
    expect(await lora({ x: 1 })).toMatch(/for options\.x but received an unknown key$/);  // one letter off a one-letter key is no hint
    expect(await lora({ lora_alpha: 16 })).toMatch(/for options\.lora_alpha but received an unknown key$/);
    expect(await lora({ weight: W0 })).toMatch(/for options\.weight but received an unknown key$/);
    expect(await lora({ ['k'.repeat(100)]: 1 })).toMatch(new RegExp(`for options\\.${'k'.repeat(40)}… but received`));
  });

  it('is refused whatever its value; a known key with the value undefined is taken, as before', () => {
    expect(() => new LinearLoRA(new Linear(I, O), r, { alhpa: undefined } as never)).toThrow(/options\.alhpa but received an unknown key/);
    expect(new LinearLoRA(new Linear(I, O), r, { alpha: undefined, seed: undefined }).scaling).toBe(1);
  });

  it('any other own key is refused, named as it is written: Object.prototype names, __proto__ from JSON, "", any string', () => {
    const lora = (o: object) => () => new LinearLoRA(new Linear(I, O), r, o as never);
    expect(lora({ constructor: 1 })).toThrow(/for options\.constructor but received an unknown key$/);
    expect(lora({ toString: 1 })).toThrow(/for options\.toString but received an unknown key$/);
    expect(lora(JSON.parse('{"__proto__": {"alpha": 6}}'))).toThrow(/for options\.__proto__ but received an unknown key$/);
    expect(lora({ '': 1 })).toThrow(/for options\[""\] but received an unknown key$/);
    const known = new Set(LINEAR_LORA.split(', '));
    fc.assert(fc.property(fc.string({ maxLength: 12 }).filter((k) => !known.has(k)), fc.anything(), (key, value) => {
      let err: unknown;
      try {
        lora({ [key]: value })();
      } catch (e) {
        err = e;
      }
      const shown = /^[A-Za-z_$][\w$]*$/.test(key) ? `options.${key}` : `options[${JSON.stringify(key)}]`;
      return err instanceof LoraError && err.code === 'ERR_ARGUMENT' && err.message.includes(`for ${shown} but received an unknown key`);
    }), { seed: 11, numRuns: 200 });
  });

  it('inherited and symbol keys are not the caller\'s options: only own string keys are checked', () => {
    const proto = { alpha: 6 };
    const opts = Object.assign(Object.create(proto), { rslora: false, [Symbol('tag')]: 1 });
    expect(new LinearLoRA(new Linear(I, O), r, opts).scaling).toBe(3);
  });

  it.each(cases)('%s: refused with the shared message; everything trains on as if the call had not been made', async (_, expected, call) => {
    const w = world();
    expect(await refusal(() => call(w))).toBe(expected);
    expect(trainOn(w)).toEqual(trainOn(world()));
  });
});

describe('the model description of fused-lora train', () => {
  const spec = () => ({
    layers: [{ name: 'fc1', type: 'linear', in: 4, out: 8, bias: true } as Record<string, unknown>, { name: 'act', type: 'relu' } as Record<string, unknown>],
    lora: { rank: 2, alpha: 4 } as Record<string, unknown>, optimizer: { type: 'adamw', lr: 0.01 } as Record<string, unknown>, steps: 5,
  });
  const refused = (edit: (s: ReturnType<typeof spec>) => void) => {
    const s = spec();
    edit(s);
    try {
      parseModelSpec(s);
    } catch (e) {
      expect(e).toBeInstanceOf(LoraError);
      return `${(e as LoraError).code} ${(e as LoraError).message}`;
    }
    throw new Error('expected a refusal');
  };
  const TOP = 'layers, weights, lora, loss, optimizer, steps, batchSize, clipGradNorm, seed, baseModel';

  it('refuses an unknown key in every section, listing the keys the section takes', () => {
    expect(refused((s) => { s.optimizer.lrr = 0.01; })).toBe(unknownKey('model', 'optimizer', 'type, lr, betas, eps, weightDecay', 'lrr', 'lr'));
    expect(refused((s) => { s.optimizer = { type: 'sgd', lr: 0.1, betas: [0.9, 0.99] }; })).toBe(unknownKey('model', 'optimizer', 'type, lr, momentum, dampening, weightDecay, nesterov', 'betas', null));
    expect(refused((s) => { s.optimizer = { tpye: 'sgd', lr: 0.1 }; })).toBe(unknownKey('model', 'optimizer', 'type, lr, betas, eps, weightDecay, momentum, dampening, nesterov', 'tpye', 'type'));
    expect(refused((s) => { s.lora.rnak = 4; })).toBe(unknownKey('model', 'lora', 'rank, alpha, targets, dropout, rslora', 'rnak', 'rank'));
    expect(refused((s) => { s.layers[0].bais = false; })).toBe(unknownKey('model', 'layers[0]', 'name, type, in, out, bias', 'bais', 'bias'));
    expect(refused((s) => { s.layers[1].out = 8; })).toBe(unknownKey('model', 'layers[1]', 'name, type', 'out', null));
    expect(refused((s) => { (s as Record<string, unknown>).stepz = 10; })).toBe(unknownKey('model', '', TOP, 'stepz', 'steps'));
    expect(refused((s) => { (s as Record<string, unknown>).batch_size = 10; })).toBe(unknownKey('model', '', TOP, 'batch_size', 'batchSize'));
  });

  it('passes the optimizer section on with exactly its keys', () => {
    const s = spec();
    s.optimizer = { type: 'sgd', lr: 0.1, momentum: 0.9, dampening: 0, weightDecay: 0.01, nesterov: true };
    expect(parseModelSpec(s).optimizer).toEqual(s.optimizer);
    s.optimizer = { type: 'adamw', lr: 0.1, betas: [0.8, 0.9], eps: 1e-6, weightDecay: 0 };
    expect(parseModelSpec(s).optimizer).toEqual(s.optimizer);
  });
});

describe('on the CUDA device (fake binding): a refused call allocates nothing and the layer trains on', () => {
  const fake = useFakeCuda();

  it('constructors and transfers refuse a typo before any device memory is taken', () => {
    const host = zeros([M, I]);
    const base = new Linear(I, O, { weight: W0, device: 'cuda' });
    const layer = new LinearLoRA(base, r, { A: A0, B: B0 });
    const live = fake().liveBuffers;
    const calls: Array<[string, () => unknown]> = [
      ['zeros', () => zeros([4], { device: 'cuda', dtpye: 'bfloat16' } as never)],
      ['tensor', () => tensor(W0, [O, I], { device: 'cuda', dtyp: 'float16' } as never)],
      ['Tensor.to', () => host.to('cuda', { dtpye: 'float16' } as never)],
      ['Linear', () => new Linear(I, O, { device: 'cuda', wieght: W0 } as never)],
      ['LinearLoRA', () => new LinearLoRA(base, r, { alhpa: 4 } as never)],
      ['LoRA', () => new LoRA(I, O, r, { device: 'cuda', a: A0 } as never)],
      ['AdamW', () => new AdamW(layer.parameters(), { lrr: 0.1 } as never)],
    ];
    for (const [name, call] of calls) {
      expect(call, name).toThrow(/but received an unknown key/);
      expect(fake().liveBuffers, name).toBe(live);
    }
  });

  it('forward, backward and their async twins refuse a typo, keep the saved forward and allocate nothing', async () => {
    const make = () => {
      const layer = new LinearLoRA(new Linear(I, O, { weight: W0, device: 'cuda' }), r, { A: A0, B: B0 });
      const opt = new AdamW(layer.parameters(), { lr: 0.05 });
      const x = X().to('cuda'), dy = zeros([M, O]).to('cuda');
      layer.forward(x);
      return { layer, opt, x, dy };
    };
    const run = ({ layer, opt, x }: ReturnType<typeof make>) => {
      layer.backward(tensor(new Float32Array(M * O).fill(0.25), [M, O]).to('cuda'));
      opt.step();
      return [layer.lora.A.dataSync(), layer.lora.B.dataSync(), layer.forward(x).dataSync()];
    };
    const w = make();
    const live = fake().liveBuffers;
    expect(() => w.layer.forward(w.x, { ot: w.dy } as never)).toThrow(/LinearLoRA\.forward: expected options keys among out for options\.ot/);
    expect(() => w.layer.backward(w.dy, { inputgrad: false } as never)).toThrow(/did you mean 'inputGrad'/);
    await expect(w.layer.forwardAsync(w.x, { sigal: undefined } as never)).rejects.toThrow(/LinearLoRA\.forwardAsync: .*options\.sigal .*did you mean 'signal'/);
    await expect(w.layer.backwardAsync(w.dy, { out: undefined, Signal: undefined } as never)).rejects.toThrow(/did you mean 'signal'/);
    expect(fake().liveBuffers).toBe(live);
    expect(run(w)).toEqual(run(make()));
  });
});

/**
 * Every call the README shows with an options object literal, with the keys in it: the object that
 * closes a call, `name(..., { a, b: 1 })`, read back to the callee by balancing parentheses.
 */
function documentedOptions(readme: string): Array<[string, string[]]> {
  const found: Array<[string, string[]]> = [];
  for (const m of readme.matchAll(/\{([^{}]*)\}\s*\)/g)) {
    let depth = 0, i = m.index - 1;
    for (; i >= 0; i--) {
      if (readme[i] === ')') depth++;
      else if (readme[i] === '(' && depth-- === 0) break;
    }
    const callee = /((?:new\s+)?[\w.]+)$/.exec(readme.slice(0, i))?.[1] ?? '';
    // A key starts the object or follows a comma, and is followed by ':' or ',' or the end (not by
    // the contents of a value, such as an array's strings).
    const keys = [...m[1].matchAll(/(?:^|,)\s*([A-Za-z_$][\w$]*)\s*(?=[:,]|$)/g)].map((k) => k[1]);
    found.push([callee, keys]);
  }
  return found;
}

/** The README, with its From TensorFlow.js and Training workers sections apart: there other packages' calls stand beside ours. */
function readmeParts(): { main: string; tfjs: string; workers: string } {
  let main = fs.readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8');
  const cut = (heading: string) => {
    const start = main.indexOf(heading), end = main.indexOf('\n## ', start + 5);
    const part = main.slice(start, end);
    main = main.slice(0, start) + main.slice(end);
    return part;
  };
  const tfjs = cut('## From TensorFlow.js'), workers = cut('## Training workers');
  return { main, tfjs, workers };
}

describe('every option the README shows is taken', () => {
  const readme = readmeParts().main;
  const documented = documentedOptions(readme);
  const fresh = () => world().fc;
  // How to call each documented callee with an options object (the README's own variable names).
  const calls: Record<string, (o: object) => unknown> = {
    tensor: (o) => tensor([1, 2], [2], o),
    zeros: (o) => zeros([2], o),
    't.to': (o) => zeros([2]).to('cpu', o),
    'new Linear': (o) => new Linear(I, O, o),
    'new LoRA': (o) => new LoRA(I, O, r, o),
    'new LinearLoRA': (o) => new LinearLoRA(new Linear(I, O), r, o),
    forward: (o) => fresh().forward(X(), o),
    backward: (o) => fresh().backward(zeros([M, O]), o),
    'layer.backward': (o) => fresh().backward(zeros([M, O]), o),
    forwardAsync: (o) => fresh().forwardAsync(X(), o),
    backwardAsync: (o) => fresh().backwardAsync(zeros([M, O]), o),
    'model.backward': (o) => world().model.backward(DY(), o),
    applyLoRA: (o) => applyLoRA(world().plain, { rank: r, ...o }),
    'new AdamW': (o) => new AdamW(fresh().parameters(), o),
    saveAdapter: (o) => saveAdapter(tmpDir(), { fc: fresh() }, o),
    loadAdapter: (o) => loadAdapter(savedDir, { fc: fresh() }, o),
    loadSafetensors: (o) => loadSafetensors(path.join(savedDir, 'adapter_model.safetensors'), o),
    merge: (o) => fresh().merge(o),
    'ops.loraForward': (o) => ops.loraForward({ ...operands(), ...o }),
    'ops.loraBackward': (o) => ops.loraBackward({ ...backOperands(), ...o }),
    'new MultiLoRALinear': (o) => new MultiLoRALinear(new Linear(I, O), { adapters: { a: { rank: r } }, ...o }),
    'layer.addAdapter': (o) => multi().addAdapter('b', { rank: r, ...o }),
    'layer.forward': (o) => multi().forward(X(), { adapterNames: ['a', 'a'], ...o }),
    'teacher.forward': (o) => multi().forward(X(), { adapterNames: ['a', 'a'], ...o }),
    'model.forward': (o) => new Sequential({ fc: multi() }).forward(X(), { adapterNames: ['a', 'a'], ...o }),
  };

  it('the README shows options for these calls (a newly documented one needs its line here)', () => {
    expect(documented.length).toBeGreaterThan(20);
    expect([...new Set(documented.map(([c]) => c))].sort()).toEqual(Object.keys(calls).sort());
  });

  it.each(documented)('%s: every key the README shows (%j) is taken; a key it does not show is refused', async (callee, keys) => {
    for (const key of keys) expect(await outcome(() => calls[callee]({ [key]: undefined })), `${callee} { ${key} }`).not.toMatch(/unknown key/);
    expect(await outcome(() => calls[callee]({ notAnOption: undefined }))).toMatch(/for (options|input)\.notAnOption but received an unknown key$/);
  });

  it('the model.json of the README is taken as it stands; a typo in it is refused', () => {
    const block = /```json\n([\s\S]*?)```/.exec(readme.slice(readme.indexOf('fused-lora train')))![1];
    const json = JSON.parse(block);
    expect(parseModelSpec(json).optimizer).toEqual(json.optimizer);
    json.lora.dropuot = 0.1;
    expect(() => parseModelSpec(json)).toThrow(/model: expected lora keys among .* for lora\.dropuot but received an unknown key \(did you mean 'dropout'\?\)/);
  });
});

describe('every option the README shows for fused-lora/tfjs is taken', () => {
  // tfjs's own calls (tf.*, tfl.*, a tfjs model's methods) take tfjs's options, not ours.
  const documented = documentedOptions(readmeParts().tfjs).filter(([callee]) => !/^(tf|tfl|model)\./.test(callee));
  const dense = () => tfl.layers.dense({ units: O });
  const built = () => {
    const layer = new LoRADense({ layer: dense(), rank: r });
    layer.apply(tfc.ones([1, I]));
    return layer;
  };
  const plain = () => tfl.sequential({ layers: [tfl.layers.dense({ units: O, inputShape: [I], name: 'fc1' })] });
  const calls: Record<string, (o: object) => unknown> = {
    loraLinear: (o) => loraLinear(tfc.ones([M, I]), tfc.ones([I, O]), null, tfc.ones([I, r]), tfc.ones([r, O]), { scaling: 1, ...o }),
    'new LoRADense': (o) => new LoRADense({ layer: dense(), rank: r, ...o }),
    applyLoRA: (o) => tfjsApplyLoRA(plain(), { rank: r, ...o }),
    saveAdapter: (o) => saveAdapter(tmpDir(), { fc: built() }, o),
  };

  it('the section shows options for these calls', () => {
    expect([...new Set(documented.map(([c]) => c))].sort()).toEqual(Object.keys(calls).sort());
  });

  it.each(documented)('%s: every key the README shows (%j) is taken; a key it does not show is refused', async (callee, keys) => {
    for (const key of keys) expect(await outcome(() => calls[callee]({ [key]: undefined })), `${callee} { ${key} }`).not.toMatch(/unknown key/);
    expect(await outcome(() => calls[callee]({ notAnOption: undefined }))).toMatch(/for (options|args)\.notAnOption but received an unknown key$/);
  });
});

describe('every option the README shows for fused-lora/workers is taken', () => {
  // BullMQ's own calls (new Queue) take BullMQ's options. No call here reaches Redis: each is refused
  // (after its option keys are checked) for its connection or its queue.
  const documented = documentedOptions(readmeParts().workers).filter(([callee]) => callee !== 'new Queue');
  const calls: Record<string, (o: object) => unknown> = {
    createTrainingWorker: (o) => createTrainingWorker({ connection: null as never, queue: 'q', ...o }),
    enqueueTraining: (o) => enqueueTraining(null as never, { model: 'm.json', data: 'd.jsonl', out: 'o', ...o }),
  };

  it('the section shows options for these calls', () => {
    expect([...new Set(documented.map(([c]) => c))].sort()).toEqual(Object.keys(calls).sort());
  });

  it.each(documented)('%s: every key the README shows (%j) is taken; a key it does not show is refused', async (callee, keys) => {
    for (const key of keys) expect(await outcome(() => calls[callee]({ [key]: undefined })), `${callee} { ${key} }`).not.toMatch(/unknown key/);
    expect(await outcome(() => calls[callee]({ notAnOption: undefined }))).toMatch(/for (options|job)\.notAnOption but received an unknown key$/);
  });
});
