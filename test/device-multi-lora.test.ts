// MultiLoRALinear on the device (fake CUDA binding): the adapters' ranks concatenated into one W_ext,
// each row keeping its own adapter's block of s and ds. Forward, dx and every adapter's dA and dB match
// the CPU layer on the same rounded values in every dtype, over interleaved rows with '__base__' rows
// and mixed ranks; W_ext's adapter blocks are rebuilt exactly when an adapter changed (an optimizer
// step, an added or removed adapter); dropout in training is refused, as for LinearLoRA there.
import { describe, expect, it } from 'vitest';
import { AdamW, Linear, MultiLoRALinear, tensor } from '../lib/index';
import { expectCode } from './expect-code';
import { relErr, useFakeCuda } from './fixtures/fake-cuda-env';
import { randomArray } from './reference';

const M = 7, I = 10, O = 6;
const SPECS = { sql: { rank: 3, alpha: 6 }, summarize: { rank: 17, alpha: 4, rslora: true }, qa: { rank: 1, alpha: 0.5 } };
const NAMES = ['qa', 'sql', '__base__', 'summarize', 'sql', 'qa', 'summarize'];
type DT = 'float32' | 'bfloat16' | 'float16';

/** The same layer on the device and, from the values as rounded there, on the CPU. */
function pair(dtype: DT) {
  const W = randomArray(O * I, 1, 0.3), b = randomArray(O, 2, 0.1);
  const base = new Linear(I, O, { weight: W, bias: b, device: 'cuda', dtype, math: 'exact' });
  const adapters = Object.fromEntries(Object.entries(SPECS).map(([n, s], k) => [n, { ...s, A: randomArray(I * s.rank, 10 + k, 0.3), B: randomArray(s.rank * O, 20 + k, 0.3) }]));
  const dev = new MultiLoRALinear(base, { adapters });
  const cpu = new MultiLoRALinear(new Linear(I, O, { weight: base.weight.dataSync(), bias: base.bias!.dataSync() }), { adapters });
  const x = tensor(randomArray(M * I, 3), [M, I], { device: 'cuda', dtype }), dy = tensor(randomArray(M * O, 4), [M, O], { device: 'cuda', dtype });
  return { dev, cpu, x, dy, xr: tensor(x.dataSync(), [M, I]), dyr: tensor(dy.dataSync(), [M, O]) };
}

describe('MultiLoRALinear on the device (fake CUDA binding)', () => {
  const fake = useFakeCuda();

  for (const dtype of ['float32', 'bfloat16', 'float16'] as const) {
    const tol = { float32: 1e-5, bfloat16: 2e-2, float16: 5e-3 }[dtype];
    it(`${dtype}: forward, dx and every adapter's dA and dB match the CPU layer within ${tol}`, async () => {
      const { dev, cpu, x, dy, xr, dyr } = pair(dtype);
      const y = dev.forward(x, { adapterNames: NAMES });
      expect([y.device, y.dtype]).toEqual(['cuda', dtype]);
      const dx = dev.backward(dy)!;
      const yc = cpu.forward(xr, { adapterNames: NAMES }), dxc = cpu.backward(dyr)!;
      expect(relErr(y.dataSync(), yc.dataSync())).toBeLessThan(tol);
      expect(relErr(dx.dataSync(), dxc.dataSync())).toBeLessThan(tol);
      for (const n of dev.adapterNames) {
        expect(relErr(dev.adapter(n).A.grad!.dataSync(), cpu.adapter(n).A.grad!.dataSync()), `${n} dA`).toBeLessThan(tol);
        expect(relErr(dev.adapter(n).B.grad!.dataSync(), cpu.adapter(n).B.grad!.dataSync()), `${n} dB`).toBeLessThan(tol);
      }
      // Async twins, and a second backward accumulates.
      const y2 = await dev.forwardAsync(x, { adapterNames: NAMES });
      await dev.backwardAsync(dy, { inputGrad: false });
      cpu.forward(xr, { adapterNames: NAMES });
      cpu.backward(dyr, { inputGrad: false });
      expect(relErr(y2.dataSync(), yc.dataSync())).toBeLessThan(tol);
      expect(relErr(dev.adapter('summarize').B.grad!.dataSync(), cpu.adapter('summarize').B.grad!.dataSync())).toBeLessThan(tol);
    });
  }

  it('runs one fused op per direction; W_ext is rebuilt when an adapter changed, not otherwise', () => {
    const { dev, cpu, x, dy, xr, dyr } = pair('float32');
    const step = () => {
      dev.forward(x, { adapterNames: NAMES });
      dev.backward(dy);
      cpu.forward(xr, { adapterNames: NAMES });
      cpu.backward(dyr);
    };
    step();
    expect([fake().count('multiLoraForwardFused'), fake().count('multiLoraBackwardFused'), fake().count('multiLoraRefresh')]).toEqual([1, 1, 1]);
    step();
    expect(fake().count('multiLoraRefresh')).toBe(1);
    new AdamW(dev.adapter('qa').parameters(), { lr: 0.1 }).step();
    new AdamW(cpu.adapter('qa').parameters(), { lr: 0.1 }).step();
    step();
    expect(fake().count('multiLoraRefresh')).toBe(2);
    dev.removeAdapter('sql');
    cpu.removeAdapter('sql');
    dev.addAdapter('new', { rank: 20, seed: 3, B: randomArray(20 * O, 5) });
    cpu.addAdapter('new', { rank: 20, seed: 3, B: randomArray(20 * O, 5) });
    const names = ['new', 'qa', 'new', '__base__', 'summarize', 'new', 'qa'];
    const y = dev.forward(x, { adapterNames: names }).dataSync();
    expect(fake().count('multiLoraRefresh')).toBe(3);
    expect(relErr(y, cpu.forward(xr, { adapterNames: names }).dataSync())).toBeLessThan(1e-5);
    const dx = dev.backward(dy)!.dataSync();
    expect(relErr(dx, cpu.backward(dyr)!.dataSync())).toBeLessThan(1e-5);
    expect(relErr(dev.adapter('new').A.grad!.dataSync(), cpu.adapter('new').A.grad!.dataSync())).toBeLessThan(1e-5);
  });

  it('refuses dropout in training mode there (ERR_DEVICE) and runs it in eval mode; dispose gives its buffers back', () => {
    const base = new Linear(I, O, { seed: 1, device: 'cuda' });
    const layer = new MultiLoRALinear(base, { adapters: { a: { rank: 2, dropout: 0.1 }, b: { rank: 2 } } });
    const x = tensor(randomArray(2 * I, 1), [2, I], { device: 'cuda' });
    expectCode(() => layer.forward(x, { adapterNames: ['a', 'b'] }), 'ERR_DEVICE');
    layer.forward(x, { adapterNames: ['b', 'b'] });  // no rows of 'a': no dropout in effect
    layer.backward(tensor(randomArray(2 * O, 2), [2, O], { device: 'cuda' }));
    const before = fake().liveBuffers;
    layer.eval().forward(x, { adapterNames: ['a', 'b'] });
    expectCode(() => layer.forward(tensor(randomArray(2 * I, 1), [2, I]), { adapterNames: ['a', 'b'] }), 'ERR_DEVICE');  // a host tensor
    layer.dispose();
    expect(fake().liveBuffers).toBeLessThan(before);
  });
});
