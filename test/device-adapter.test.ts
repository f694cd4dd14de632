// PEFT adapters of LinearLoRA layers on the device (fake CUDA binding): saveAdapter downloads the fp32
// masters A and B (and a device AdamW's state) and writes what a CPU layer would; loadAdapter uploads
// into the device masters through their storage, so W_ext is rebuilt before the next forward; a
// refused load leaves the device layer (values and forward) as it was; Sequential.zeroGrad clears
// device gradients.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AdamW, Linear, LinearLoRA, loadAdapter, LoraError, mseLoss, readSafetensors, saveAdapter, Sequential, tensor } from '../lib/index';
import { relErr, useFakeCuda } from './fixtures/fake-cuda-env';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fused-lora-device-adapter-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const freshDir = () => path.join(tmp, `d${n++}`);

const P = 'model.layers.0.self_attn.q_proj';
const M = 6, I = 9, O = 5, r = 3, alpha = 6;
const seq = (len: number, f: (i: number) => number) => Float32Array.from({ length: len }, (_, i) => f(i));
const W0 = seq(O * I, (i) => 0.3 * Math.sin(i + 1));
const b0 = seq(O, (i) => 0.05 * (i - 2));
const A0 = seq(I * r, (i) => 0.2 * Math.cos(i + 0.5));
const B0 = seq(r * O, (i) => 0.15 * Math.sin(3 * i));
const X0 = seq(M * I, (i) => Math.sin(0.37 * i) + 0.2);
const T0 = seq(M * O, (i) => 0.4 * Math.sin(0.9 * i));

type DT = 'float32' | 'bfloat16';
const TOL: Record<DT, number> = { float32: 1e-5, bfloat16: 2e-2 };

/** A device LinearLoRA on the shared base values; A and B from `seed` (0: A0, B0). */
function deviceLayer(dtype: DT, seed = 0, rank = r): LinearLoRA {
  const base = new Linear(I, O, { weight: W0, bias: b0, device: 'cuda', dtype, math: 'exact' });
  const A = seed === 0 && rank === r ? A0 : seq(I * rank, (i) => 0.1 * Math.sin(seed + 0.7 * i));
  const B = seed === 0 && rank === r ? B0 : seq(rank * O, (i) => 0.1 * Math.cos(seed + 1.1 * i));
  return new LinearLoRA(base, rank, { A, B, alpha });
}

/** A CPU layer over the device layer's base as rounded there, with `A` and `B`. */
function cpuLayer(dev: LinearLoRA, A: Float32Array, B: Float32Array): LinearLoRA {
  return new LinearLoRA(new Linear(I, O, { weight: dev.base.weight.dataSync(), bias: dev.base.bias!.dataSync() }), dev.rank, { A, B, alpha });
}

/** A few AdamW steps of mseLoss on the device. */
function train(layer: LinearLoRA, opt: AdamW, steps: number): void {
  const x = tensor(X0, [M, I], { device: 'cuda', dtype: layer.dtype });
  const target = tensor(T0, [M, O], { device: 'cuda', dtype: layer.dtype });
  for (let s = 0; s < steps; s++) {
    const { grad } = mseLoss(layer.forward(x), target);
    layer.backward(grad, { inputGrad: false });
    opt.step();
    opt.zeroGrad();
  }
}

const bits = (t: { dataSync(): Float32Array }) => Buffer.from(t.dataSync().buffer);
const xOf = (dtype: DT) => tensor(X0, [M, I], { device: 'cuda', dtype });

describe('adapters of device layers (fake CUDA binding)', () => {
  const fake = useFakeCuda();

  for (const dtype of ['float32', 'bfloat16'] as const) {
    it(`${dtype}: save after training, load into a fresh device layer and a CPU layer: A and B bit for bit, W_ext rebuilt`, async () => {
      const dev = deviceLayer(dtype);
      train(dev, new AdamW(dev.parameters(), { lr: 0.02 }), 3);
      const [A, B] = [dev.lora.A.dataSync(), dev.lora.B.dataSync()];
      expect(relErr(A, A0)).toBeGreaterThan(1e-3);  // training moved them
      const dir = freshDir();
      await saveAdapter(dir, { [P]: dev });

      // The file holds Aᵀ and Bᵀ of the device masters, in PEFT's shapes.
      const { tensors } = await readSafetensors(path.join(dir, 'adapter_model.safetensors'));
      const a = tensors[`base_model.model.${P}.lora_A.weight`], b = tensors[`base_model.model.${P}.lora_B.weight`];
      expect([a.shape, b.shape]).toEqual([[r, I], [O, r]]);
      expect(a.data[1 * I + 2]).toBe(A[2 * r + 1]);
      expect(b.data[4 * r + 2]).toBe(B[2 * O + 4]);

      // A fresh device layer whose W_ext was built from its old A and B (same alpha: only the values change).
      const fresh = deviceLayer(dtype, 7);
      const before = fresh.forward(xOf(dtype)).dataSync();
      const res = await loadAdapter(dir, { [P]: fresh });
      expect(res).toEqual({ modules: [P], optimizer: false });
      expect(bits(fresh.lora.A)).toEqual(Buffer.from(A.buffer));
      expect(bits(fresh.lora.B)).toEqual(Buffer.from(B.buffer));
      fake().clearCalls();
      const y = fresh.forward(xOf(dtype)).dataSync();
      expect(fake().count('refreshWExt')).toBe(1);
      expect(fake().calls.indexOf('refreshWExt')).toBeLessThan(fake().calls.indexOf('loraForwardFused'));
      const ref = cpuLayer(fresh, A, B).forward(xOf(dtype).dataSync()).dataSync();
      expect(relErr(y, ref)).toBeLessThan(TOL[dtype]);
      expect(relErr(before, ref)).toBeGreaterThan(10 * TOL[dtype]);  // the comparison can tell stale from fresh
      expect(relErr(y, dev.forward(xOf(dtype)).dataSync())).toBe(0);  // the trained layer itself

      // And into a CPU layer.
      const cpu = cpuLayer(dev, seq(I * r, () => 0.5), seq(r * O, () => -0.5));
      await loadAdapter(dir, { [P]: cpu });
      expect(bits(cpu.lora.A)).toEqual(Buffer.from(A.buffer));
      expect(bits(cpu.lora.B)).toEqual(Buffer.from(B.buffer));
    });
  }

  it('a device AdamW: its state is saved as host float32 and restored on the device; the next steps match bit for bit', async () => {
    const dev = deviceLayer('bfloat16');
    const opt = new AdamW(dev.parameters(), { lr: 0.02, weightDecay: 0.05 });
    train(dev, opt, 3);
    const state = opt.stateDict();
    expect(Object.values(state.tensors).every((t) => t instanceof Float32Array)).toBe(true);
    expect(Object.values(state.tensors).some((t) => t.some((v) => v !== 0))).toBe(true);
    const dir = freshDir();
    await saveAdapter(dir, { [P]: dev }, { optimizer: opt });

    const fresh = deviceLayer('bfloat16', 3);
    const opt2 = new AdamW(fresh.parameters(), { lr: 0.5 });
    const res = await loadAdapter(dir, { [P]: fresh }, { optimizer: opt2 });
    expect(res.optimizer).toBe(true);
    const got = opt2.stateDict();
    expect([got.step, got.hyper]).toEqual([3, state.hyper]);
    for (const [k, t] of Object.entries(state.tensors)) expect(Buffer.from(got.tensors[k].buffer)).toEqual(Buffer.from(t.buffer));

    train(dev, opt, 2);
    train(fresh, opt2, 2);
    expect(bits(fresh.lora.A)).toEqual(bits(dev.lora.A));
    expect(bits(fresh.lora.B)).toEqual(bits(dev.lora.B));
  });

  it('a refused load (rank mismatch) leaves the device layer\'s A, B, optimizer state and forward output unchanged', async () => {
    const src = deviceLayer('float32', 0, 2);
    const dir = freshDir();
    const srcOpt = new AdamW(src.parameters());
    train(src, srcOpt, 1);
    await saveAdapter(dir, { [P]: src }, { optimizer: srcOpt });

    const dev = deviceLayer('float32', 5);
    const opt = new AdamW(dev.parameters(), { lr: 0.02 });
    train(dev, opt, 2);
    const [a0, b0_, s0] = [bits(dev.lora.A), bits(dev.lora.B), opt.stateDict()];
    const y0 = dev.forward(xOf('float32')).dataSync();
    const versions = [dev.lora.A.storage().version, dev.lora.B.storage().version];
    const err = await loadAdapter(dir, { [P]: dev }, { optimizer: opt }).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(LoraError);
    expect(err).toMatchObject({ code: 'ERR_SHAPE' });
    expect((err as Error).message).toMatch(/expected rank 3/);
    expect([bits(dev.lora.A), bits(dev.lora.B)]).toEqual([a0, b0_]);
    expect([dev.lora.A.storage().version, dev.lora.B.storage().version]).toEqual(versions);
    expect(opt.stateDict()).toEqual(s0);
    fake().clearCalls();
    expect(dev.forward(xOf('float32')).dataSync()).toEqual(y0);
    expect(fake().count('refreshWExt')).toBe(0);
  });

  it('Sequential.zeroGrad zeroes device gradients', () => {
    const l1 = deviceLayer('float32'), l2 = deviceLayer('float32', 2);
    const model = new Sequential({ q: l1, v: l2 });  // not chained here: each layer gets its own backward
    const x = xOf('float32');
    for (const l of [l1, l2]) {
      l.forward(x);
      l.backward(tensor(T0, [M, O], { device: 'cuda' }), { inputGrad: false });
    }
    const grads = model.parameters().map((p) => p.grad!);
    expect(grads.length).toBe(4);
    expect(grads.every((g) => g.device === 'cuda' && g.dataSync().some((v) => v !== 0))).toBe(true);
    model.zeroGrad();
    expect(grads.every((g) => g.dataSync().every((v) => v === 0))).toBe(true);
  });
});
