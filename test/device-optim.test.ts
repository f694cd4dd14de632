// Optimizers and losses with device tensors (fake CUDA binding): AdamW steps device parameters on the
// device and agrees with the CPU optimizer step for step, state dicts move through the host, SGD is
// CPU-only with a clear ERR_DEVICE, clipGradNorm takes device gradients, and the losses run where the
// prediction is.
import { describe, expect, it } from 'vitest';
import { AdamW, clipGradNorm, crossEntropyLoss, LoRA, mseLoss, SGD, Tensor, tensor } from '../lib/index';
import { relErr, useFakeCuda } from './fixtures/fake-cuda-env';
import { message } from './expect-code';

const seq = (n: number, f: (i: number) => number) => Float32Array.from({ length: n }, (_, i) => f(i));
const P0 = seq(37, (i) => Math.sin(i + 0.3));
const Q0 = seq(12, (i) => 0.5 * Math.cos(i));
const grads = (step: number) => [seq(37, (i) => 0.1 * Math.cos(i * step + 1)), seq(12, (i) => 0.2 * Math.sin(i - step))];

/** Two parameters with grads, on `device`. */
function params(device: 'cpu' | 'cuda'): Tensor[] {
  return [tensor(P0.slice(), [37], { device }), tensor(Q0.slice(), [3, 4], { device })];
}

function setGrads(ps: Tensor[], step: number): void {
  const g = grads(step);
  ps.forEach((p, i) => { p.grad = tensor(g[i], p.shape, { device: p.device }); });
}

describe('AdamW on device parameters (fake CUDA binding)', () => {
  const fake = useFakeCuda();

  it('steps on the device (the adamw kernel, state in device memory) and matches the CPU optimizer step for step', () => {
    const dev = params('cuda'), cpu = params('cpu');
    setGrads(dev, 0);
    setGrads(cpu, 0);
    const o1 = new AdamW(dev, { lr: 0.05, weightDecay: 0.1, betas: [0.8, 0.99] });
    const o2 = new AdamW(cpu, { lr: 0.05, weightDecay: 0.1, betas: [0.8, 0.99] });
    for (let s = 1; s <= 4; s++) {
      setGrads(dev, s);
      setGrads(cpu, s);
      fake().clearCalls();
      o1.step();
      o2.step();
      expect(fake().calls).toEqual(['adamw', 'adamw']);
    }
    dev.forEach((p, i) => expect(relErr(p.dataSync(), cpu[i].dataSync())).toBeLessThan(1e-6));
    const sd1 = o1.stateDict(), sd2 = o2.stateDict();
    expect(sd1.step).toBe(4);
    for (const k of Object.keys(sd2.tensors)) expect(relErr(sd1.tensors[k], sd2.tensors[k])).toBeLessThan(1e-6);
  });

  it('a state dict taken on the CPU resumes on the device, and the other way round', () => {
    const cpu = params('cpu');
    setGrads(cpu, 1);
    const oc = new AdamW(cpu, { lr: 0.01 });
    oc.step();
    const dev = cpu.map((p) => p.to('cuda'));
    setGrads(dev, 1);
    const od = new AdamW(dev, { lr: 0.01 });
    od.loadStateDict(oc.stateDict());
    setGrads(cpu, 2);
    setGrads(dev, 2);
    oc.step();
    od.step();
    dev.forEach((p, i) => expect(relErr(p.dataSync(), cpu[i].dataSync())).toBeLessThan(1e-6));
    const hosts = params('cpu');
    setGrads(hosts, 1);
    const back = new AdamW(hosts, { lr: 0.01 });
    back.loadStateDict(od.stateDict());
    expect(back.stateDict().tensors).toEqual(od.stateDict().tensors);
  });

  it('zeroGrad clears device gradients; a list may mix CPU and device parameters', () => {
    const mixed = [params('cpu')[0], params('cuda')[1]];
    setGrads(mixed, 1);
    const o = new AdamW(mixed, { lr: 0.01 });
    o.step();
    expect(fake().count('adamw')).toBe(1);
    o.zeroGrad();
    expect(mixed[1].grad!.dataSync().every((v) => v === 0)).toBe(true);
    expect(mixed[0].grad!.dataSync().every((v) => v === 0)).toBe(true);
  });

  it('each step bumps the parameter storage version (how a LinearLoRA knows to refresh W_ext)', () => {
    const [p] = params('cuda');
    setGrads([p], 1);
    const v0 = p.storage().version;
    const o = new AdamW([p]);
    o.step();
    o.step();
    expect(p.storage().version).toBe(v0 + 2);
  });

  it('device parameters must be float32 masters with float32 cuda gradients of their shape', () => {
    const bf = tensor(P0, [37], { device: 'cuda', dtype: 'bfloat16' });
    bf.grad = tensor(P0, [37], { device: 'cuda', dtype: 'bfloat16' });
    expect(message(() => new AdamW([bf]))).toMatch(/^ERR_DTYPE AdamW: expected a float32 tensor for params\[0\]/);
    const [p] = params('cuda');
    p.grad = tensor(P0, [37]);
    expect(message(() => new AdamW([p]))).toMatch(/^ERR_DEVICE AdamW: expected a cuda tensor for params\[0\]\.grad/);
    p.grad = tensor(P0, [37], { device: 'cuda' });
    const o = new AdamW([p]);
    p.grad = tensor(P0, [37]);  // reassigned between steps: refused before anything changes
    const before = p.dataSync();
    expect(message(() => o.step())).toMatch(/^ERR_DEVICE AdamW\.step: expected a cuda tensor for params\[0\]\.grad/);
    expect(p.dataSync()).toEqual(before);
    expect(o.stepCount).toBe(0);
  });

  it('dispose() gives the optimizer state back', () => {
    const ps = params('cuda');
    setGrads(ps, 1);
    const before = fake().liveBuffers;
    const o = new AdamW(ps);
    expect(fake().liveBuffers).toBe(before + 4);
    o.dispose();
    expect(fake().liveBuffers).toBe(before);
  });

  it('SGD is CPU-only for now: a device parameter is ERR_DEVICE naming it', () => {
    const ps = [params('cpu')[0], params('cuda')[1]];
    setGrads(ps, 1);
    expect(message(() => new SGD(ps, { lr: 0.1 }))).toMatch(/^ERR_DEVICE SGD: expected a cpu tensor for params\[1\] but received a cuda tensor .*SGD runs on the CPU only for now/);
  });

  it('clipGradNorm over device gradients gives the CPU norm and scales them on the device', () => {
    const dev = params('cuda'), cpu = params('cpu');
    setGrads(dev, 3);
    setGrads(cpu, 3);
    const n1 = clipGradNorm(dev, 0.05), n2 = clipGradNorm(cpu, 0.05);
    expect(n1).toBeCloseTo(n2, 10);
    dev.forEach((p, i) => expect(relErr(p.grad!.dataSync(), cpu[i].grad!.dataSync())).toBeLessThan(1e-6));
    fake().clearCalls();
    clipGradNorm(dev, 1e6);  // below the limit: nothing is written back
    expect(fake().count('upload')).toBe(0);
  });

  it('LoRA on the device keeps A, B and their gradients as float32 device tensors', () => {
    const l = new LoRA(5, 3, 2, { device: 'cuda', seed: 4 });
    const h = new LoRA(5, 3, 2, { seed: 4 });
    for (const t of [l.A, l.B, l.A.grad!, l.B.grad!]) expect([t.device, t.dtype]).toEqual(['cuda', 'float32']);
    expect(l.A.dataSync()).toEqual(h.A.dataSync());
    expect(l.B.dataSync().every((v) => v === 0)).toBe(true);
    const A = tensor(seq(10, (i) => i / 10), [5, 2], { device: 'cuda' });
    const own = new LoRA(5, 3, 2, { device: 'cuda', A });
    expect(own.A).not.toBe(A);  // its own copy: the optimizer updates it in place
    expect(own.A.dataSync()).toEqual(A.dataSync());
    own.dispose();
    expect(own.A.disposed && own.A.grad!.disposed).toBe(true);
  });
});

describe('losses on the device (fake CUDA binding)', () => {
  const fake = useFakeCuda();
  const Y0 = seq(24, (i) => Math.sin(i)), T0 = seq(24, (i) => Math.cos(i * 0.5));

  for (const [dtype, tol] of [['float32', 1e-6], ['bfloat16', 2e-2], ['float16', 5e-3]] as const) {
    it(`mseLoss in ${dtype} matches the CPU loss on the same values; the gradient stays on the device in ${dtype}`, () => {
      const y = tensor(Y0, [4, 6], { device: 'cuda', dtype }), t = tensor(T0, [4, 6], { device: 'cuda', dtype });
      const d = mseLoss(y, t), c = mseLoss(y.dataSync(), t.dataSync());
      expect([d.grad.device, d.grad.dtype, ...d.grad.shape]).toEqual(['cuda', dtype, 4, 6]);
      expect(Math.abs(d.loss - c.loss) / c.loss).toBeLessThan(1e-6);
      expect(relErr(d.grad.dataSync(), c.grad.dataSync())).toBeLessThan(tol);
    });

    it(`crossEntropyLoss in ${dtype} matches the CPU loss; labels from an Int32Array, an array or a tensor`, () => {
      const logits = tensor(Y0.map((v) => 3 * v), [4, 6], { device: 'cuda', dtype });
      const labels = Int32Array.from([0, 5, 2, 3]);
      const c = crossEntropyLoss(logits.dataSync(), labels);
      for (const lab of [labels, [0, 5, 2, 3], tensor([0, 5, 2, 3], [4]), tensor([0, 5, 2, 3], [4], { device: 'cuda' })]) {
        const d = crossEntropyLoss(logits, lab);
        expect(Math.abs(d.loss - c.loss) / c.loss).toBeLessThan(1e-6);
        expect(relErr(d.grad.dataSync(), c.grad.dataSync())).toBeLessThan(tol);
        expect([d.grad.device, d.grad.dtype]).toEqual(['cuda', dtype]);
      }
    });
  }

  it('the target must be on the device in the same dtype; labels are checked on the host before any launch', () => {
    const y = tensor(Y0, [4, 6], { device: 'cuda' });
    expect(message(() => mseLoss(y, tensor(T0, [4, 6])))).toMatch(/^ERR_DEVICE mseLoss: expected a cuda tensor for target/);
    expect(message(() => mseLoss(y, T0))).toMatch(/^ERR_DEVICE mseLoss: expected a cuda Tensor for target/);
    expect(message(() => mseLoss(y, tensor(T0, [4, 6], { device: 'cuda', dtype: 'float16' })))).toMatch(/^ERR_DTYPE mseLoss: expected a float32 tensor for target/);
    expect(message(() => mseLoss(y, tensor(T0, [6, 4], { device: 'cuda' })))).toMatch(/^ERR_SHAPE mseLoss: expected shape \[4, 6\] for target/);
    expect(message(() => mseLoss(tensor(Y0, [4, 6]), tensor(T0, [4, 6], { device: 'cuda' })))).toMatch(/^ERR_DEVICE mseLoss: expected a cpu tensor for target .*received a cuda tensor/);
    fake().clearCalls();
    expect(message(() => crossEntropyLoss(y, [0, 1, 6, 2]))).toMatch(/^ERR_ARGUMENT crossEntropyLoss: expected a class index, an integer in \[0, 6\) for labels\[2\]/);
    expect(message(() => crossEntropyLoss(y, [0, 1, 2]))).toMatch(/^ERR_SHAPE crossEntropyLoss: .*4 labels/);
    expect(fake().calls).toEqual([]);
  });

  it('options.out receives the gradient on the device', () => {
    const y = tensor(Y0, [4, 6], { device: 'cuda' }), t = tensor(T0, [4, 6], { device: 'cuda' });
    const out = tensor(new Float32Array(24), [4, 6], { device: 'cuda' });
    expect(mseLoss(y, t, { out }).grad).toBe(out);
    expect(message(() => mseLoss(y, t, { out: y }))).toMatch(/^ERR_ARGUMENT .*does not share memory with y/);
  });
});
