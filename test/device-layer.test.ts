// LinearLoRA on the device (fake CUDA binding): it lives where its base Linear does; forward, backward
// and the gradients match the CPU layer on the same rounded values in every dtype, fused and unfused;
// the fused path dispatches the fused kernels over W_ext, which is rebuilt exactly when A, B, W or
// scaling changed (after each optimizer step); workspaces grow only with M; dispose() gives every
// byte back; mixed-device arguments are ERR_DEVICE naming the argument; merge, async and training.
import { describe, expect, it } from 'vitest';
import { AdamW, applyLoRA, Linear, LinearLoRA, mseLoss, Sequential, Tensor, tensor } from '../lib/index';
import { expectCode } from './expect-code';
import { relErr, useFakeCuda } from './fixtures/fake-cuda-env';
import { message } from './expect-code';

const M = 6, I = 9, O = 5, r = 3;
const seq = (n: number, f: (i: number) => number) => Float32Array.from({ length: n }, (_, i) => f(i));
const W0 = seq(O * I, (i) => 0.3 * Math.sin(i + 1));
const b0 = seq(O, (i) => 0.05 * (i - 2));
const A0 = seq(I * r, (i) => 0.2 * Math.cos(i + 0.5));
const B0 = seq(r * O, (i) => 0.15 * Math.sin(3 * i));
const X0 = seq(M * I, (i) => Math.sin(0.37 * i) + 0.2);
const DY0 = seq(M * O, (i) => 0.5 * Math.cos(1.3 * i));
const T0 = seq(M * O, (i) => 0.4 * Math.sin(0.9 * i));

type DT = 'float32' | 'bfloat16' | 'float16';

/** The same layer on the device and, from the values as rounded there, on the CPU. */
function pair(dtype: DT, options: { fused?: boolean; math?: 'tf32' | 'exact'; alpha?: number } = {}) {
  const base = new Linear(I, O, { weight: W0, bias: b0, device: 'cuda', dtype, math: options.math ?? 'exact' });
  const dev = new LinearLoRA(base, r, { A: A0, B: B0, alpha: options.alpha ?? 2 * r, fused: options.fused });
  const cpu = new LinearLoRA(new Linear(I, O, { weight: base.weight.dataSync(), bias: base.bias!.dataSync() }), r,
    { A: A0, B: B0, alpha: options.alpha ?? 2 * r, fused: options.fused });
  const x = tensor(X0, [M, I], { device: 'cuda', dtype }), dy = tensor(DY0, [M, O], { device: 'cuda', dtype });
  return { base, dev, cpu, x, dy, xr: x.dataSync(), dyr: dy.dataSync() };
}

describe('LinearLoRA on the device (fake CUDA binding)', () => {
  const fake = useFakeCuda();

  it('lives where its base does: float32 masters A, B and gradients on the device, the compute dtype from the base', () => {
    const { dev } = pair('bfloat16');
    expect([dev.device, dev.dtype]).toEqual(['cuda', 'bfloat16']);
    for (const t of [dev.lora.A, dev.lora.B, dev.lora.A.grad!, dev.lora.B.grad!]) expect([t.device, t.dtype]).toEqual(['cuda', 'float32']);
    expect(dev.lora.A.dataSync()).toEqual(A0);
    expect(new LinearLoRA(new Linear(I, O, { seed: 1 }), r).device).toBe('cpu');
  });

  for (const dtype of ['float32', 'bfloat16', 'float16'] as const) {
    for (const fused of [true, false]) {
      const tol = { float32: 1e-5, bfloat16: 2e-2, float16: 5e-3 }[dtype];
      it(`${dtype}, ${fused ? 'fused' : 'unfused'}: forward, dx, dA and dB match the CPU layer within ${tol}`, () => {
        const { dev, cpu, x, dy, xr, dyr } = pair(dtype, { fused });
        const y = dev.forward(x);
        expect([y.device, y.dtype, ...y.shape]).toEqual(['cuda', dtype, M, O]);
        expect(relErr(y.dataSync(), cpu.forward(xr).dataSync())).toBeLessThan(tol);
        const dx = dev.backward(dy)!;
        expect([dx.device, dx.dtype, ...dx.shape]).toEqual(['cuda', dtype, M, I]);
        expect(relErr(dx.dataSync(), cpu.backward(dyr)!.dataSync())).toBeLessThan(tol);
        expect(relErr(dev.lora.A.grad!.dataSync(), cpu.lora.A.grad!.dataSync())).toBeLessThan(2 * tol);
        expect(relErr(dev.lora.B.grad!.dataSync(), cpu.lora.B.grad!.dataSync())).toBeLessThan(2 * tol);
        // gradients accumulate over backward calls, as on the CPU
        dev.backward(dy, { inputGrad: false });
        cpu.backward(dyr, { inputGrad: false });
        expect(relErr(dev.lora.B.grad!.dataSync(), cpu.lora.B.grad!.dataSync())).toBeLessThan(2 * tol);
      });
    }
  }

  it('fused: true runs the fused kernels over W_ext; fused: false runs PEFT\'s order; the two agree', () => {
    const f = pair('bfloat16', { fused: true }), u = pair('bfloat16', { fused: false });
    fake().clearCalls();
    const yf = f.dev.forward(f.x);
    f.dev.backward(f.dy);
    expect(fake().calls.filter((c) => c.startsWith('lora'))).toEqual(['loraForwardFused', 'loraBackwardFused']);
    expect(fake().count('refreshWExt')).toBe(1);
    fake().clearCalls();
    const yu = u.dev.forward(u.x);
    u.dev.backward(u.dy);
    expect(fake().calls.filter((c) => c.startsWith('lora'))).toEqual(['loraForwardUnfused', 'loraBackwardUnfused']);
    expect(fake().count('refreshWExt')).toBe(0);
    expect(relErr(yf.dataSync(), yu.dataSync())).toBeLessThan(2e-2);
  });

  it('W_ext is rebuilt after each optimizer step (and only then), so the next forward sees the new A and B', () => {
    const { dev, cpu, x, dy, xr, dyr } = pair('float32');
    const od = new AdamW(dev.parameters(), { lr: 0.05 }), oc = new AdamW(cpu.parameters(), { lr: 0.05 });
    dev.forward(x);
    fake().clearCalls();
    dev.forward(x);
    dev.backward(dy);
    expect(fake().count('refreshWExt')).toBe(0);  // nothing changed since the first forward
    cpu.forward(xr);
    cpu.backward(dyr);
    for (let step = 0; step < 3; step++) {
      od.step();
      oc.step();
      fake().clearCalls();
      const y = dev.forward(x);
      expect(fake().count('refreshWExt')).toBe(1);
      expect(fake().calls.indexOf('refreshWExt')).toBeLessThan(fake().calls.indexOf('loraForwardFused'));
      expect(relErr(y.dataSync(), cpu.forward(xr).dataSync())).toBeLessThan(1e-5);
      expect(relErr(dev.lora.A.dataSync(), cpu.lora.A.dataSync())).toBeLessThan(1e-5);
      dev.backward(dy);
      cpu.backward(dyr);
    }
  });

  it('a new scaling (LoRA.configure, as loadAdapter does) rebuilds W_ext too', () => {
    const { dev, cpu, x, xr } = pair('float32');
    dev.forward(x);
    dev.lora.configure({ alpha: 1.5 });
    cpu.lora.configure({ alpha: 1.5 });
    fake().clearCalls();
    const y = dev.forward(x);
    expect(fake().count('refreshWExt')).toBe(1);
    expect(relErr(y.dataSync(), cpu.forward(xr).dataSync())).toBeLessThan(1e-5);
  });

  it('merge and unmerge on the device: the merged layer is the base GEMM with the adapter folded in; fp32 unmerge gives W back as the CPU does', () => {
    const { dev, cpu, base, x, dy, xr } = pair('float32');
    const y0 = dev.forward(x).dataSync();
    dev.merge();
    cpu.merge();
    expect(dev.merged).toBe(true);
    expect(relErr(base.weight.dataSync(), cpu.base.weight.dataSync())).toBe(0);
    fake().clearCalls();
    const ym = dev.forward(x);
    expect(fake().calls.filter((c) => c.startsWith('lora') || c === 'gemm')).toEqual(['gemm']);
    expect(relErr(ym.dataSync(), y0)).toBeLessThan(1e-5);
    expect(message(() => dev.backward(dy))).toMatch(/^ERR_ARGUMENT .*unmerge\(\) to train/);
    dev.unmerge();
    cpu.unmerge();
    expect(base.weight.dataSync()).toEqual(cpu.base.weight.dataSync());
    fake().clearCalls();
    expect(relErr(dev.forward(x).dataSync(), cpu.forward(xr).dataSync())).toBeLessThan(1e-5);
    expect(fake().count('cast')).toBeGreaterThanOrEqual(2);  // W's block of W_ext copied again after W changed
  });

  it('workspaces grow only when M grows, and the old ones are given back at once', () => {
    const { dev } = pair('float32');
    const run = (m: number) => {
      const x = tensor(seq(m * I, (i) => Math.sin(i)), [m, I], { device: 'cuda' });
      const dy = tensor(seq(m * O, (i) => Math.cos(i)), [m, O], { device: 'cuda' });
      dev.forward(x).dispose();
      dev.backward(dy, { inputGrad: false });
      x.dispose();
      dy.dispose();
    };
    run(4);
    const held = fake().liveBuffers;  // parameters, gradients, W_ext, the workspaces
    fake().clearCalls();
    run(2);
    expect(fake().count('alloc')).toBe(3);  // x, y and dy: no workspace
    expect(fake().liveBuffers).toBe(held);
    run(8);
    expect(fake().liveBuffers).toBe(held);  // grown in place of the old ones
    fake().clearCalls();
    run(8);
    expect(fake().count('alloc')).toBe(3);
  });

  it('dispose() gives every device byte back: the layer, its base, the tensors', () => {
    const { dev, base, x, dy } = pair('bfloat16');
    const y = dev.forward(x);
    const dx = dev.backward(dy)!;
    const opt = new AdamW(dev.parameters());
    opt.step();
    dev.forward(x).dispose();
    for (const t of [y, dx, x, dy]) t.dispose();
    opt.dispose();
    dev.dispose();
    base.dispose();
    expect(fake().liveBuffers).toBe(0);
    expect(fake().liveBytes).toBe(0);
    expectCode(() => dev.forward(x), 'ERR_DISPOSED');
  });

  it('mixed devices: a cpu x or dy into a cuda layer is ERR_DEVICE naming it, and the layer carries on', () => {
    const { dev, x, dy, xr, dyr } = pair('float16');
    dev.forward(x);
    expect(message(() => dev.forward(tensor(xr, [M, I])))).toMatch(/^ERR_DEVICE LinearLoRA\.forward: expected a cuda tensor for x .*received a cpu tensor.*\.to\('cuda', \{ dtype: 'float16' \}\)/);
    expect(message(() => dev.forward(xr))).toMatch(/^ERR_DEVICE LinearLoRA\.forward: expected a cuda Tensor for x/);
    expect(message(() => dev.backward(tensor(dyr, [M, O])))).toMatch(/^ERR_DEVICE LinearLoRA\.backward: expected a cuda tensor for dy/);
    expect(message(() => dev.forward(tensor(xr, [M, I], { device: 'cuda' })))).toMatch(/^ERR_DTYPE LinearLoRA\.forward: expected a float16 tensor for x/);
    expect(message(() => dev.backward(tensor(DY0.subarray(0, 2 * O), [2, O], { device: 'cuda', dtype: 'float16' })))).toMatch(/^ERR_SHAPE .*6 rows of 5/);
    expect(dev.backward(dy)!.shape).toEqual([M, I]);  // the forward's saved state survived
  });

  it('without a forward, backward is ERR_ARGUMENT; inputGrad: false skips dx', () => {
    const { dev, x, dy } = pair('float32');
    expect(message(() => dev.backward(dy))).toMatch(/^ERR_ARGUMENT LinearLoRA\.backward: expected a forward\(\) before backward\(\)/);
    dev.forward(x);
    dev.backward(dy);  // the first backward makes its workspaces
    fake().clearCalls();
    expect(dev.backward(dy, { inputGrad: false })).toBe(null);
    expect(fake().count('alloc')).toBe(0);  // no dx
  });

  it('the unfused path keeps x for backward: disposing x after forward is safe (as on the CPU, where forward keeps a reference)', () => {
    const u = pair('float32', { fused: false }), f = pair('float32', { fused: true });
    for (const p of [u, f]) {
      p.dev.forward(p.x);
      p.x.dispose();
      p.cpu.forward(p.xr);
      expect(relErr(p.dev.backward(p.dy)!.dataSync(), p.cpu.backward(p.dyr)!.dataSync())).toBeLessThan(1e-5);
    }
  });

  it('dropout on the LoRA path is CPU-only for now: ERR_DEVICE in training mode, fine in eval mode', () => {
    const base = new Linear(I, O, { weight: W0, device: 'cuda' });
    const l = new LinearLoRA(base, r, { dropout: 0.1, seed: 1 });
    const x = tensor(X0, [M, I], { device: 'cuda' });
    expect(message(() => l.forward(x))).toMatch(/^ERR_DEVICE LinearLoRA\.forward: expected dropout 0 on the CUDA device/);
    l.eval();
    expect(l.forward(x).shape).toEqual([M, O]);
    expect(l.lastDropoutMask).toBe(null);
  });

  it('checkFinite: true refuses a non-finite x on the device too', () => {
    const base = new Linear(I, O, { weight: W0, device: 'cuda' });
    const l = new LinearLoRA(base, r, { checkFinite: true });
    const bad = X0.slice();
    bad[7] = Infinity;
    expect(message(() => l.forward(tensor(bad, [M, I], { device: 'cuda' })))).toMatch(/^ERR_NOT_FINITE .*x/);
  });

  it('async twins queue in call order, wait off the JS thread, and give the sync results', async () => {
    const { dev, x, dy } = pair('bfloat16');
    const ySync = dev.forward(x).dataSync();
    fake().clearCalls();
    const pf = dev.forwardAsync(x);
    const pb = dev.backwardAsync(dy);
    expectCode(() => dev.forward(x), 'ERR_BACKEND');  // async work queued on this layer
    const [y, dx] = await Promise.all([pf, pb]);
    expect(y.dataSync()).toEqual(ySync);
    expect(dx!.shape).toEqual([M, I]);
    expect(fake().count('synchronizeAsync')).toBe(2);
    expect(fake().count('synchronize')).toBe(0);
  });

  it('trains: AdamW with mseLoss on the device tracks the same loop on the CPU step for step (fp32, exact math)', () => {
    const { dev, cpu, x, xr } = pair('float32');
    const target = tensor(T0, [M, O], { device: 'cuda' });
    const od = new AdamW(dev.parameters(), { lr: 0.02 }), oc = new AdamW(cpu.parameters(), { lr: 0.02 });
    const losses: number[] = [];
    for (let s = 0; s < 8; s++) {
      const ld = mseLoss(dev.forward(x), target), lc = mseLoss(cpu.forward(xr), T0);
      expect(Math.abs(ld.loss - lc.loss)).toBeLessThan(1e-5 * Math.max(1, lc.loss));
      losses.push(ld.loss);
      dev.backward(ld.grad, { inputGrad: false });
      cpu.backward(lc.grad, { inputGrad: false });
      od.step();
      oc.step();
      od.zeroGrad();
      oc.zeroGrad();
    }
    expect(losses.at(-1)!).toBeLessThan(losses[0]);
    expect(relErr(dev.lora.B.dataSync(), cpu.lora.B.dataSync())).toBeLessThan(1e-4);
  });

  it('applyLoRA over device Linears gives device LinearLoRAs, and a Sequential of them runs forward and backward on the device', () => {
    const model = new Sequential({
      fc1: new Linear(I, 7, { seed: 1, device: 'cuda' }),
      fc2: new Linear(7, O, { seed: 2, device: 'cuda' }),
    });
    const layers = applyLoRA(model, { rank: 2, seed: 3 });
    expect(Object.values(layers).map((l) => l.device)).toEqual(['cuda', 'cuda']);
    const y = model.forward(tensor(X0, [M, I], { device: 'cuda' }));
    expect([y.device, ...y.shape]).toEqual(['cuda', M, O]);
    const dx = model.backward(tensor(DY0, [M, O], { device: 'cuda' }));
    expect(dx instanceof Tensor && dx.device).toBe('cuda');
    expect(model.parameters().every((p) => p.device === 'cuda')).toBe(true);
  });
});
