// Device tensors through the public API, on a CPU fake of the CUDA addon (test/fixtures/fake-cuda.ts):
// uploads and downloads with their dtype rounding, .to() round trips, dispose() and the finalizer's
// accounting, the device choice ('auto', 'cuda' without a device), and the mixed-device rule on the
// CPU side (a cuda tensor given to a CPU op is ERR_DEVICE naming the argument).
import { describe, expect, it } from 'vitest';
import { Linear, LinearLoRA, LoraError, ops, relu, Tensor, tensor, zeros } from '../lib/index';
import { decodeInto, roundToBf16 } from '../lib/io/dtype';
import { expectCode } from './expect-code';
import { f16Bits, f16Value } from './fixtures/fake-cuda';
import { collectGarbage, useFakeCuda } from './fixtures/fake-cuda-env';

const values = () => Float32Array.from([1 / 3, -2.5, 1e-3, 65504, 70000, 1e-8, -0, 3.0000002]);
const roundF16 = (v: number) => f16Value(f16Bits(v));

function thrown(fn: () => unknown): LoraError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(LoraError);
    return e as LoraError;
  }
  throw new Error('expected a throw');
}

describe('device tensors (fake CUDA binding)', () => {
  const fake = useFakeCuda();

  it("tensor(..., { device: 'cuda' }) uploads into device memory; dataSync() copies back, exactly in float32", () => {
    const v = values();
    const t = tensor(v, [2, 4], { device: 'cuda' });
    expect(t.device).toBe('cuda');
    expect(t.dtype).toBe('float32');
    expect(t.shape).toEqual([2, 4]);
    expect(fake().calls).toEqual(['alloc', 'upload']);
    expect(fake().liveBytes).toBe(8 * 4);
    v[0] = 99;  // the device holds a copy, unlike a CPU tensor over the same Float32Array
    expect(Array.from(t.dataSync())).toEqual(Array.from(values()));
  });

  it('bfloat16 and float16 round to nearest even on upload and come back as Float32Array', () => {
    const bf = tensor(values(), [8], { device: 'cuda', dtype: 'bfloat16' });
    const h = tensor(values(), [8], { device: 'cuda', dtype: 'float16' });
    expect(fake().liveBytes).toBe(2 * 8 * 2);
    const b = bf.dataSync(), f = h.dataSync();
    expect(b).toBeInstanceOf(Float32Array);
    expect(Array.from(b)).toEqual(Array.from(values(), roundToBf16));
    expect(Array.from(f)).toEqual(Array.from(values(), roundF16));
    expect(f[4]).toBe(Infinity);     // 70000 is past float16's range
    expect(f[1]).toBe(-2.5);         // exact
    expect(b[0]).not.toBe(Math.fround(1 / 3));
  });

  it('data() copies back without the blocking download (downloadAsync)', async () => {
    const t = tensor(values(), [8], { device: 'cuda', dtype: 'bfloat16' });
    fake().clearCalls();
    const d = await t.data();
    expect(Array.from(d)).toEqual(Array.from(values(), roundToBf16));
    expect(fake().calls).toEqual(['downloadAsync']);
  });

  it(".to() moves and converts: cpu → cuda → other dtype → cpu, and returns the tensor itself when it is already there", () => {
    const cpu = tensor(values(), [2, 4]);
    expect(cpu.to('cpu')).toBe(cpu);
    const d = cpu.to('cuda');
    expect(d.to('cuda')).toBe(d);
    expect(d.to('cuda', { dtype: 'float32' })).toBe(d);
    const h = d.to('cuda', { dtype: 'float16' });
    expect(h.dtype).toBe('float16');
    expect(fake().calls.at(-1)).toBe('cast');
    const back = h.to('cpu');
    expect(back.device).toBe('cpu');
    expect(back.dtype).toBe('float32');
    expect(back.shape).toEqual([2, 4]);
    expect(Array.from(back.dataSync())).toEqual(Array.from(values(), roundF16));
    expect(Array.from(d.to('cpu').dataSync())).toEqual(Array.from(values()));
    const bf = cpu.to('cuda', { dtype: 'bfloat16' });
    expect(Array.from(bf.dataSync())).toEqual(Array.from(values(), roundToBf16));
    expect(bf.to('cuda', { dtype: 'float32' }).dataSync()).toEqual(bf.dataSync());  // widening is exact
  });

  it('a copy made by .to() has no grad, and the source is untouched', () => {
    const t = tensor(values(), [8], { device: 'cuda' });
    t.grad = zeros([8], { device: 'cuda' });
    const c = t.to('cpu');
    expect(c.grad).toBe(null);
    expect(t.grad).not.toBe(null);
  });

  it('zeros() places like tensor()', () => {
    const z = zeros([3, 5], { device: 'cuda', dtype: 'float16' });
    expect([z.device, z.dtype]).toEqual(['cuda', 'float16']);
    expect(Array.from(z.dataSync())).toEqual(new Array(15).fill(0));
    expect(zeros([2]).device).toBe('cpu');
  });

  it('dispose() gives the memory back at once; twice is harmless; any later use is ERR_DISPOSED', async () => {
    const t = tensor(values(), [8], { device: 'cuda' });
    expect(fake().liveBuffers).toBe(1);
    t.dispose();
    t.dispose();
    expect(fake().liveBuffers).toBe(0);
    expect(fake().liveBytes).toBe(0);
    expect(t.disposed).toBe(true);
    expectCode(() => t.dataSync(), 'ERR_DISPOSED');
    expectCode(() => t.to('cpu'), 'ERR_DISPOSED');
    expectCode(() => t.to('cuda'), 'ERR_DISPOSED');
    expectCode(() => t.reshape([2, 4]), 'ERR_DISPOSED');
    await expect(t.data()).rejects.toMatchObject({ code: 'ERR_DISPOSED' });
  });

  it('Symbol.dispose releases a device tensor at the end of its scope', () => {
    {
      using t = tensor(values(), [8], { device: 'cuda' });
      expect(t.device).toBe('cuda');
      expect(fake().liveBuffers).toBe(1);
    }
    expect(fake().liveBuffers).toBe(0);
  });

  it('a reshape shares the storage: the memory goes back with the last of the two to be disposed', () => {
    const t = tensor(values(), [8], { device: 'cuda', dtype: 'bfloat16' });
    const v = t.reshape([2, 4]);
    expect(fake().liveBuffers).toBe(1);
    t.dispose();
    expect(fake().liveBuffers).toBe(1);
    expect(Array.from(v.dataSync())).toEqual(Array.from(values(), roundToBf16));
    v.dispose();
    expect(fake().liveBuffers).toBe(0);
  });

  it('disposing a tensor while data() is in flight frees its memory after the copy, not under it', async () => {
    const t = tensor(values(), [8], { device: 'cuda' });
    const p = t.data();
    t.dispose();
    expect(fake().liveBuffers).toBe(1);  // held for the copy
    expect(Array.from(await p)).toEqual(Array.from(values()));
    expect(fake().liveBuffers).toBe(0);
  });

  it('the finalizer is the safety net: device tensors dropped without dispose() are freed by the GC, and the bytes reported to V8 come back', async () => {
    const before = fake().liveBytes;
    (() => {
      for (let i = 0; i < 20; i++) tensor(new Float32Array(1000), [1000], { device: 'cuda', dtype: i % 2 ? 'bfloat16' : 'float32' });
    })();
    expect(fake().liveBytes).toBe(before + 10 * 4000 + 10 * 2000);
    await collectGarbage();
    expect(fake().liveBytes).toBe(before);
    expect(fake().acct.finalized).toBe(20);
  });

  it('zero-size device tensors work (nothing to copy)', () => {
    const t = tensor(new Float32Array(0), [0, 4], { device: 'cuda' });
    expect(t.size).toBe(0);
    expect(t.dataSync().length).toBe(0);
    expect(t.to('cpu').shape).toEqual([0, 4]);
  });

  it("device 'auto' picks the device where one answers", () => {
    const t = tensor(values(), [8], { device: 'auto', dtype: 'bfloat16' });
    expect([t.device, t.dtype]).toEqual(['cuda', 'bfloat16']);
    expect(tensor(values(), [8]).device).toBe('cpu');  // the default stays the CPU
  });

  it("an explicit 'cpu' with float16 is ERR_DTYPE (bfloat16 lives there); unknown dtypes and devices are ERR_DTYPE and ERR_DEVICE", () => {
    expect(thrown(() => tensor(values(), [8], { device: 'cpu', dtype: 'float16' })).code).toBe('ERR_DTYPE');
    expect(tensor(values(), [8], { device: 'cpu', dtype: 'bfloat16' }).dtype).toBe('bfloat16');
    expect(thrown(() => tensor(values(), [8], { device: 'cuda', dtype: 'float64' as 'float32' })).message).toMatch(/options\.dtype.*float64/);
    expect(thrown(() => tensor(values(), [8], { device: 'gpu' as 'cuda' })).message).toMatch(/options\.device.*gpu/);
    expect(thrown(() => tensor(values(), [8]).to('cpu', { dtype: 'float16' })).code).toBe('ERR_DTYPE');
  });

  it('a cuda tensor given to a CPU op is ERR_DEVICE naming the argument (nothing is copied behind the caller\'s back)', () => {
    const x = tensor(new Float32Array(6), [2, 3], { device: 'cuda' });
    const e = thrown(() => relu(x));
    expect(e.code).toBe('ERR_DEVICE');
    expect(e.message).toMatch(/relu: expected a cpu tensor for x .*received a cuda tensor \(float32, shape \[2, 3\]\).*\.to\('cpu'\)/);
    const cpuLayer = new LinearLoRA(new Linear(3, 2, { seed: 1 }), 1, { seed: 1 });
    const f = thrown(() => cpuLayer.forward(x));
    expect(f.code).toBe('ERR_DEVICE');
    expect(f.message).toMatch(/LinearLoRA\.forward: expected a cpu tensor for x/);
    const w = new Float32Array(6), a = new Float32Array(3), b = new Float32Array(2);
    expect(thrown(() => ops.loraForward({ x, weight: w, A: a, B: b, scaling: 1, r: 1, O: 2 })).message).toMatch(/ops\.loraForward: expected a cpu tensor for x/);
    expect(cpuLayer.forward(x.to('cpu')).device).toBe('cpu');  // the layer survives
    x.dispose();  // disposed is ERR_DISPOSED wherever the tensor lived, before any question of where it runs
    expect(thrown(() => relu(x)).code).toBe('ERR_DISPOSED');
    expect(thrown(() => ops.loraForward({ x, weight: w, A: a, B: b, scaling: 1, r: 1, O: 2 })).code).toBe('ERR_DISPOSED');
    expect(thrown(() => cpuLayer.forward(x)).code).toBe('ERR_DISPOSED');
  });

  it('zero(), write(), hostView() and assertLive() are the same on both devices: in place on the CPU, through the device there', () => {
    const v = values();
    for (const device of ['cpu', 'cuda'] as const) {
      const t = tensor(v.slice(), [8], { device, dtype: 'float32' });
      expect(Array.from(t.hostView())).toEqual(Array.from(v));
      t.write(Float32Array.from(v, (x) => 2 * x));
      expect(Array.from(t.dataSync())).toEqual(Array.from(v, (x) => Math.fround(2 * x)));
      expect(thrown(() => t.write(new Float32Array(7))).code).toBe('ERR_SHAPE');
      t.zero();
      expect(Array.from(t.dataSync())).toEqual(new Array(8).fill(0));
      t.assertLive();
      t.dispose();
      for (const use of [() => t.assertLive('f', 'x'), () => t.hostView('f', 'x'), () => t.zero('f', 'x'), () => t.write(v, 'f', 'x')]) {
        const e = thrown(use);
        expect([e.code, e.message]).toEqual(['ERR_DISPOSED', expect.stringMatching(/^f: expected a live tensor for x but received a disposed one/)]);
      }
    }
    const c = tensor(v, [8]);
    expect(c.hostView()).toBe(v);  // no copy on the CPU
    fake().clearCalls();
    const d = tensor(v, [8], { device: 'cuda' });
    expect(d.hostView()).not.toBe(v);
    expect(fake().calls).toEqual(['alloc', 'upload', 'download']);
  });

  it('Tensor is still a thin wrapper on the CPU: a Float32Array is its storage, no device calls', () => {
    const v = values();
    const t = new Tensor(v, [8]);
    expect(t.buffer()).toBe(v);
    expect([t.device, t.dtype]).toEqual(['cpu', 'float32']);
    expect(tensor(v, [8]).buffer()).toBe(v);
    expect(fake().calls).toEqual([]);
  });
});

describe('the fake itself', () => {
  it('float16: every finite half round-trips through its encoder and matches the safetensors decoder; ties go to even', () => {
    const bytes = Buffer.alloc(2 * 65536);
    for (let h = 0; h < 65536; h++) bytes.writeUInt16LE(h, 2 * h);
    const decoded = new Float32Array(65536);
    decodeInto('F16', bytes, decoded);
    for (let h = 0; h < 65536; h++) {
      if (Number.isNaN(decoded[h])) continue;
      expect(f16Value(h)).toBe(decoded[h]);
      if (f16Bits(decoded[h]) !== h) expect.fail(`half 0x${h.toString(16)} did not round-trip`);
    }
    expect(f16Bits(1 + 2 ** -11)).toBe(0x3c00);            // a tie: to even (1.0)
    expect(f16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02);        // a tie: to even (up)
    expect(f16Value(f16Bits(65520))).toBe(Infinity);       // rounds past the largest half
  });
});

describe('device tensors when the binding says no device answers', () => {
  const fake = useFakeCuda({ available: false });

  it("'cuda' is ERR_DEVICE naming options.device and the reason; 'auto' falls back to the CPU (float16 in float32, bfloat16 kept)", () => {
    const e = thrown(() => tensor(values(), [8], { device: 'cuda' }));
    expect(e.code).toBe('ERR_DEVICE');
    expect(e.message).toMatch(/options\.device.*'cuda'.*no CUDA device \(fake\)/);
    const t = tensor(values(), [8], { device: 'auto', dtype: 'float16' });
    expect([t.device, t.dtype]).toEqual(['cpu', 'float32']);
    const b = tensor(values(), [8], { device: 'auto', dtype: 'bfloat16' });
    expect([b.device, b.dtype]).toEqual(['cpu', 'bfloat16']);
    expect(thrown(() => tensor(values(), [8]).to('cuda')).code).toBe('ERR_DEVICE');
    expect(fake().liveBuffers).toBe(0);
  });
});
