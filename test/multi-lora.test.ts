// MultiLoRALinear as a user sees it: numerics against float64 (on the BLAS the machine has; the
// built-in kernels per ISA in test/multi-lora-<isa>.test.ts), equality with K separate LinearLoRAs
// on the same rows (forward, dx, each adapter's dA and dB) over random segmentations, finite
// differences, optimizers per adapter, adding and removing adapters, and refusals that change nothing.
import { describe, expect, it } from 'vitest';
import { native } from '../lib/backends/cpu/binding';
import { AdamW, Linear, LinearLoRA, LoraError, MultiLoRALinear, SGD, Tensor, tensor, zeros } from '../lib/index';
import { expectCode, message } from './expect-code';
import { checkCase, numericsCases, rowNames } from './multi-lora-check';
import { randomArray, relErr } from './reference';

describe('against the float64 reference (outputs pre-filled with NaN, gradients accumulated)', () => {
  it.each(numericsCases())('%s', (_label, c) => checkCase(c));
});

interface Spec { rank: number; alpha?: number; rslora?: boolean; dropout?: number; seed: number }

/** The rows of `names` that name `n`, gathered (the rows a LinearLoRA of that adapter alone would get). */
function gather(v: Float32Array, names: readonly string[], n: string, width: number): Float32Array {
  const rows = names.flatMap((m, i) => (m === n ? [i] : []));
  const out = new Float32Array(rows.length * width);
  rows.forEach((row, j) => out.set(v.subarray(row * width, (row + 1) * width), j * width));
  return out;
}

/**
 * A MultiLoRALinear and, for each adapter, a LinearLoRA of the same options and seed over the same
 * base (so the same A and the same dropout masks), B set to the same nonzero values.
 */
function twins(I: number, O: number, specs: Record<string, Spec>, seed = 1) {
  const base = new Linear(I, O, { seed, bias: true });
  const multi = new MultiLoRALinear(base, { adapters: specs });
  const single: Record<string, LinearLoRA> = {};
  for (const [n, s] of Object.entries(specs)) {
    const { rank, ...rest } = s;
    single[n] = new LinearLoRA(base, rank, rest);
    const B = randomArray(rank * O, seed + n.length * 7 + rank);
    multi.adapter(n).B.write(B);
    single[n].lora.B.write(B);
    expect(multi.adapter(n).A.dataSync()).toEqual(single[n].lora.A.dataSync());
  }
  return { base, multi, single };
}

/** One step of both on the same rows; returns the largest relative error of y, dx, each dA and dB. */
async function stepBoth(t: ReturnType<typeof twins>, names: string[], seed: number, async: boolean) {
  const { base, multi, single } = t;
  const I = base.inFeatures, O = base.outFeatures, M = names.length;
  const x = randomArray(M * I, seed), dy = randomArray(M * O, seed + 1);
  const y = (async ? await multi.forwardAsync(tensor(x, [M, I]), { adapterNames: names }) : multi.forward(tensor(x, [M, I]), { adapterNames: names })).dataSync();
  const dx = (async ? await multi.backwardAsync(tensor(dy, [M, O])) : multi.backward(tensor(dy, [M, O])))!.dataSync();
  const errs: Record<string, number> = {};
  const wantY = new Float32Array(M * O), wantDx = new Float32Array(M * I);
  base.forward(tensor(x, [M, I]), { out: tensor(wantY, [M, O]) });
  base.backward(tensor(dy, [M, O]), { out: tensor(wantDx, [M, I]) });
  for (const [n, l] of Object.entries(single)) {
    const rows = names.flatMap((m, i) => (m === n ? [i] : []));
    if (rows.length === 0) continue;
    const ys = l.forward(tensor(gather(x, names, n, I), [rows.length, I])).dataSync();
    const dxs = l.backward(tensor(gather(dy, names, n, O), [rows.length, O]))!.dataSync();
    rows.forEach((row, j) => {
      wantY.set(ys.subarray(j * O, (j + 1) * O), row * O);
      wantDx.set(dxs.subarray(j * I, (j + 1) * I), row * I);
    });
  }
  errs.y = relErr(y, wantY);
  errs.dx = relErr(dx, wantDx);
  for (const [n, l] of Object.entries(single)) {
    errs[`${n}.dA`] = relErr(multi.adapter(n).A.grad!.dataSync(), l.lora.A.grad!.dataSync());
    errs[`${n}.dB`] = relErr(multi.adapter(n).B.grad!.dataSync(), l.lora.B.grad!.dataSync());
  }
  return errs;
}

describe('equals K separate LinearLoRAs on the same rows', () => {
  const specs: Record<string, Spec> = {
    sql: { rank: 8, alpha: 16, seed: 11 },
    summarize: { rank: 16, dropout: 0.05, rslora: true, seed: 12 },
    qa: { rank: 1, alpha: 0.5, seed: 13 },
    tiny: { rank: 3, dropout: 0.3, alpha: 6, seed: 14 },
  };
  const names = Object.keys(specs);
  const segmentations: Array<[string, (M: number, s: number) => string[]]> = [
    ['grouped', (M) => rowNames(M, names, 'grouped')],
    ['interleaved', (M) => rowNames(M, names, 'interleaved')],
    ['random, with __base__ rows', (M, s) => rowNames(M, names, 'random', s, 5)],
    ['one adapter empty, single rows of another, unsorted', (M, s) => rowNames(M, ['sql', 'summarize', 'tiny'], 'random', s).map((n, i) => (i === 3 ? 'qa' : n))],
    ['every row __base__', (M) => Array(M).fill('__base__')],
    ['one row per adapter', () => ['tiny', 'qa', 'sql', 'summarize']],
  ];
  for (const async of [false, true]) {
    it.each(segmentations)(`${async ? 'async' : 'sync'}: %s, three steps (dropout masks advance per adapter)`, async (_label, segment) => {
      const t = twins(45, 37, specs, 3);
      for (let step = 0; step < 3; step++) {
        const errs = await stepBoth(t, segment(23 + step, 100 + step), 1000 + step, async);
        for (const [k, e] of Object.entries(errs)) expect(e, k).toBeLessThan(1e-6);
      }
    });
  }

  it('at real widths (I = O = 1024, 8 adapters of 16 rows, interleaved), each adapter its own dropout', async () => {
    const many: Record<string, Spec> = {};
    for (let k = 0; k < 8; k++) many[`a${k}`] = { rank: 4 << (k % 3), alpha: 8, dropout: k % 2 ? 0.1 : 0, seed: 50 + k };
    const t = twins(1024, 1024, many, 9);
    const errs = await stepBoth(t, rowNames(128, Object.keys(many), 'interleaved'), 7, false);
    for (const [k, e] of Object.entries(errs)) expect(e, k).toBeLessThan(1e-6);
  });
});

describe('finite differences', () => {
  // L = Σ dy ⊙ y is linear in each of A_i, B_i and x separately, so central differences of the
  // fp32 forward carry no truncation error: only rounding, of order 1e-3 relative at h = 1e-2.
  it('dA, dB of every adapter and dx are the derivatives of Σ dy ⊙ y', () => {
    const I = 6, O = 5, M = 7;
    const base = new Linear(I, O, { seed: 2, bias: true });
    const layer = new MultiLoRALinear(base, { adapters: { p: { rank: 2, alpha: 3, seed: 1 }, q: { rank: 3, rslora: true, seed: 2 } } });
    layer.adapter('p').B.write(randomArray(2 * O, 3));
    layer.adapter('q').B.write(randomArray(3 * O, 4));
    const names = ['q', 'p', '__base__', 'q', 'q', 'p', 'q'];
    const x = randomArray(M * I, 5), dy = randomArray(M * O, 6);
    const loss = () => {
      const y = layer.eval().forward(tensor(x, [M, I]), { adapterNames: names }).dataSync();
      layer.train();
      return y.reduce((acc, v, i) => acc + dy[i] * v, 0);
    };
    layer.forward(tensor(x, [M, I]), { adapterNames: names });
    const dx = layer.backward(tensor(dy, [M, O]))!.dataSync();
    const h = 1e-2;
    const check = (v: Float32Array, grad: Float32Array, write: () => void) => {
      for (let i = 0; i < v.length; i++) {
        const keep = v[i];
        v[i] = keep + h; write(); const up = loss();
        v[i] = keep - h; write(); const down = loss();
        v[i] = keep; write();
        expect(Math.abs((up - down) / (2 * h) - grad[i])).toBeLessThan(2e-3 * (1 + Math.abs(grad[i])));
      }
    };
    for (const n of ['p', 'q']) {
      const l = layer.adapter(n);
      const A = l.A.dataSync(), B = l.B.dataSync();
      check(A, l.A.grad!.dataSync(), () => l.A.write(A));
      check(B, l.B.grad!.dataSync(), () => l.B.write(B));
    }
    check(x, dx, () => undefined);
  });
});

describe('adapters are independent', () => {
  const make = () => new MultiLoRALinear(new Linear(12, 10, { seed: 1 }), { adapters: { a: { rank: 2, seed: 1 }, b: { rank: 4, seed: 2 }, c: { rank: 3, seed: 3 } } });
  const snapshot = (l: MultiLoRALinear, n: string) => {
    const a = l.adapter(n);
    return [a.A.dataSync(), a.B.dataSync(), a.A.grad!.dataSync(), a.B.grad!.dataSync()];
  };
  const step = (l: MultiLoRALinear, names: string[]) => {
    l.forward(tensor(randomArray(names.length * 12, names.length), [names.length, 12]), { adapterNames: names });
    l.backward(tensor(randomArray(names.length * 10, 3), [names.length, 10]));
  };

  it("one adapter's optimizer step leaves the others bit-identical; each has its own optimizer and learning rate", () => {
    const l = make();
    step(l, ['a', 'b', 'c', 'a', 'b', 'c']);
    const optA = new AdamW(l.adapter('a').parameters(), { lr: 0.1 });
    const optB = new SGD(l.adapter('b').parameters(), { lr: 0.01, momentum: 0.9 });
    const before = { b: snapshot(l, 'b'), c: snapshot(l, 'c') };
    const aBefore = l.adapter('a').B.dataSync();
    optA.step();
    expect(snapshot(l, 'b')).toEqual(before.b);
    expect(snapshot(l, 'c')).toEqual(before.c);
    expect(l.adapter('a').B.dataSync()).not.toEqual(aBefore);
    optB.step();
    expect(snapshot(l, 'c')).toEqual(before.c);
    expect(l.adapter('b').B.dataSync()).not.toEqual(before.b[1]);
  });

  it("a batch without an adapter's rows leaves its gradients as they were", () => {
    const l = make();
    step(l, ['a', 'b', 'c']);
    const c = snapshot(l, 'c');
    step(l, ['a', 'b', '__base__']);
    expect(snapshot(l, 'c')).toEqual(c);
  });

  it("adding and removing adapters between steps keeps the others' state; the new one trains", () => {
    const l = make();
    step(l, ['a', 'b', 'c', 'b']);
    const a = snapshot(l, 'a'), b = snapshot(l, 'b');
    l.removeAdapter('c');
    l.addAdapter('qa', { rank: 5, alpha: 10, seed: 9 });
    expect(l.adapterNames).toEqual(['a', 'b', 'qa']);
    expect(snapshot(l, 'a')).toEqual(a);
    expect(snapshot(l, 'b')).toEqual(b);
    expect(l.adapter('qa').rank).toBe(5);
    expect(l.adapter('qa').scaling).toBe(2);
    step(l, ['qa', 'qa', '__base__']);
    expect(snapshot(l, 'a')).toEqual(a);
    expect(l.adapter('qa').B.grad!.dataSync().some((v) => v !== 0)).toBe(true);
    expect(l.parameters()).toEqual([...l.adapter('a').parameters(), ...l.adapter('b').parameters(), ...l.adapter('qa').parameters()]);
    expect(l.numTrainable()).toBe((2 + 4 + 5) * 22);
  });

  it('a new adapter leaves the layer equal to its base (B starts at zero)', () => {
    const base = new Linear(9, 7, { seed: 4, bias: true });
    const l = new MultiLoRALinear(base, { adapters: { a: { rank: 2 }, b: { rank: 8, dropout: 0.5 } } });
    const x = tensor(randomArray(5 * 9, 1), [5, 9]);
    expect(l.forward(x, { adapterNames: ['a', 'b', 'b', '__base__', 'a'] }).dataSync()).toEqual(base.forward(x).dataSync());
  });
});

describe('bad input: a typed error, and nothing changed', () => {
  const fresh = () => {
    const l = new MultiLoRALinear(new Linear(4, 3, { seed: 1 }), { adapters: { sql: { rank: 2, seed: 1, dropout: 0.2 }, qa: { rank: 1, seed: 2 } } });
    l.adapter('sql').B.write(randomArray(6, 2));
    return l;
  };
  const x = () => tensor(randomArray(8, 3), [2, 4]);

  it('an unknown adapter name, a names array of the wrong length or kind, a missing one', () => {
    const l = fresh();
    expect(message(() => l.forward(x(), { adapterNames: ['sql', 'sqll'] }))).toBe(
      `ERR_ARGUMENT MultiLoRALinear.forward: expected the name of an adapter of this layer (one of "sql", "qa") or '__base__' for options.adapterNames[1] but received string "sqll"`);
    expect(message(() => l.forward(x(), { adapterNames: ['sql'] }))).toBe(
      'ERR_SHAPE MultiLoRALinear.forward: expected 2 names, one per row of x (shape [2, 4]) for options.adapterNames but received 1 names');
    expectCode(() => l.forward(x(), { adapterNames: 'sql' } as never), 'ERR_ARGUMENT');
    expectCode(() => l.forward(x(), { adapterNames: ['sql', 3] } as never), 'ERR_ARGUMENT');
    expectCode(() => l.forward(x(), undefined as never), 'ERR_ARGUMENT');
    expectCode(() => l.adapter('nope'), 'ERR_ARGUMENT');
    expectCode(() => l.removeAdapter('nope'), 'ERR_ARGUMENT');
    expectCode(() => l.addAdapter('sql', { rank: 2 }), 'ERR_ARGUMENT');
    expectCode(() => l.addAdapter('__base__', { rank: 2 }), 'ERR_ARGUMENT');
    expectCode(() => l.addAdapter('x', { rank: 0 }), 'ERR_SHAPE');
    expectCode(() => l.addAdapter('x', undefined as never), 'ERR_ARGUMENT');
    expectCode(() => l.backward(zeros([2, 3])), 'ERR_ARGUMENT');  // no forward
    expect(l.adapterNames).toEqual(['sql', 'qa']);
  });

  it('a refused forward keeps the last forward for backward and the dropout steps where they were', () => {
    const a = fresh(), b = fresh();
    const names = ['sql', 'qa'];
    a.forward(x(), { adapterNames: names });
    b.forward(x(), { adapterNames: names });
    expectCode(() => b.forward(x(), { adapterNames: ['sql', 'nope'] }), 'ERR_ARGUMENT');
    expectCode(() => b.forward(tensor(randomArray(6, 1), [2, 3]), { adapterNames: names }), 'ERR_SHAPE');
    expectCode(() => b.forward(x(), { adapterNames: names, out: zeros([2, 2]) }), 'ERR_SHAPE');
    expect(b.backward(tensor(new Float32Array(6).fill(1), [2, 3]))!.dataSync()).toEqual(a.backward(tensor(new Float32Array(6).fill(1), [2, 3]))!.dataSync());
    // The next forward draws the same masks on both: the refused calls advanced no step.
    expect(b.forward(x(), { adapterNames: names }).dataSync()).toEqual(a.forward(x(), { adapterNames: names }).dataSync());
  });

  it('adding or removing an adapter between forward and backward, or with async work queued, is refused', async () => {
    const l = fresh();
    l.forward(x(), { adapterNames: ['sql', 'qa'] });
    expect(message(() => l.removeAdapter('qa'))).toMatch(/^ERR_ARGUMENT MultiLoRALinear.removeAdapter: expected a layer between steps but received one whose last forward awaits its backward/);
    expectCode(() => l.addAdapter('new', { rank: 1 }), 'ERR_ARGUMENT');
    l.backward(zeros([2, 3]));
    const pending = l.forwardAsync(x(), { adapterNames: ['qa', 'qa'] });
    expectCode(() => l.removeAdapter('qa'), 'ERR_BACKEND');
    expectCode(() => l.addAdapter('new', { rank: 1 }), 'ERR_BACKEND');
    await pending;
    expect(l.adapterNames).toEqual(['sql', 'qa']);
    await l.backwardAsync(zeros([2, 3]));
    l.removeAdapter('qa');
    expect(l.adapterNames).toEqual(['sql']);
  });

  it('an eval() forward keeps nothing for backward, so adapters may change after it', () => {
    const l = fresh().eval();
    l.forward(x(), { adapterNames: ['sql', 'qa'] });
    expectCode(() => l.backward(zeros([2, 3])), 'ERR_ARGUMENT');
    l.addAdapter('new', { rank: 1 });
    expect(l.adapterNames).toEqual(['sql', 'qa', 'new']);
  });

  it('construction refuses bad adapters before keeping any, and unknown keys everywhere', () => {
    const base = new Linear(4, 3);
    expectCode(() => new MultiLoRALinear(base, { adapters: {} }), 'ERR_ARGUMENT');
    expectCode(() => new MultiLoRALinear(base, undefined as never), 'ERR_ARGUMENT');
    expectCode(() => new MultiLoRALinear(base, { adapters: { a: { rank: 2 }, b: { rank: 2, dropout: 1 } } }), 'ERR_ARGUMENT');
    expectCode(() => new MultiLoRALinear(base, { adapters: { a: { rank: 2, A: new Float32Array(3) } } }), 'ERR_SHAPE');
    expectCode(() => new MultiLoRALinear({} as never, { adapters: { a: { rank: 2 } } }), 'ERR_ARGUMENT');
    expect(message(() => new MultiLoRALinear(base, { adapters: { a: { rank: 2, alhpa: 4 } } } as never))).toBe(
      `ERR_ARGUMENT MultiLoRALinear: expected options.adapters["a"] keys among rank, alpha, rslora, dropout, seed, A, B for options.adapters["a"].alhpa but received an unknown key (did you mean 'alpha'?)`);
    expectCode(() => new MultiLoRALinear(base, { adapters: { a: { rank: 2 } }, rank: 2 } as never), 'ERR_ARGUMENT');
    const l = fresh();
    expect(message(() => l.forward(x(), { adapterNames: ['sql', 'qa'], adapter_names: [] } as never))).toMatch(/unknown key \(did you mean 'adapterNames'\?\)$/);
    expectCode(() => l.addAdapter('n', { rank: 1, dropuot: 0.1 } as never), 'ERR_ARGUMENT');
    l.forward(x(), { adapterNames: ['sql', 'qa'] });
    expectCode(() => l.backward(zeros([2, 3]), { inputgrad: false } as never), 'ERR_ARGUMENT');
    expectCode(() => l.backward(zeros([3, 3])), 'ERR_SHAPE');
    expect(l.backward(zeros([2, 3]), { inputGrad: false })).toBeNull();
  });

  it('async calls refuse the same, rejecting; a disposed layer refuses everything', async () => {
    const l = fresh();
    await expect(l.forwardAsync(x(), { adapterNames: ['sql'] })).rejects.toMatchObject({ code: 'ERR_SHAPE' });
    await expect(l.forwardAsync(x(), { adapterNames: ['sql', 'qa'], sigal: null } as never)).rejects.toBeInstanceOf(LoraError);
    l.dispose();
    expectCode(() => l.forward(x(), { adapterNames: ['sql', 'qa'] }), 'ERR_DISPOSED');
  });

  it('the native entry points check what they rely on', () => {
    const order = new Int32Array(2), start = new Int32Array(2);
    expectCode(() => native.multiLoraGroup({ M: 2, K: 1, index: Int32Array.of(0, 1), order, start }), 'ERR_ARGUMENT');
    expect(native.multiLoraGroup({ M: 3, K: 1, index: Int32Array.of(0, -1, 0), order: new Int32Array(3), start })).toBe(false);
    const args = {
      M: 2, I: 4, O: 3, K: 1, x: new Float32Array(8), W: new Float32Array(12), order: Int32Array.of(0, 1), start: Int32Array.of(0, 2),
      adapters: [{ r: 2, A: new Float32Array(8), B: new Float32Array(6), scaling: 1 }], s: new Float32Array(4), y: new Float32Array(6),
    };
    native.multiLoraForward(args);
    expectCode(() => native.multiLoraForward({ ...args, order: Int32Array.of(0, 2) }), 'ERR_ARGUMENT');
    expectCode(() => native.multiLoraForward({ ...args, start: Int32Array.of(0, 3) }), 'ERR_ARGUMENT');
    expectCode(() => native.multiLoraForward({ ...args, s: new Float32Array(3) }), 'ERR_SHAPE');
    expectCode(() => native.multiLoraForward({ ...args, adapters: [{ ...args.adapters[0], A: new Float32Array(7) }] }), 'ERR_SHAPE');
    // Not grouped: x̃ is gathered, so xt is required.
    expectCode(() => native.multiLoraForward({ ...args, order: Int32Array.of(1, 0) }), 'ERR_DTYPE');
    native.multiLoraForward({ ...args, order: Int32Array.of(1, 0), xt: new Float32Array(8) });
  });
});

describe('the layer', () => {
  it('takes rank-3 inputs (names per flattened row) and writes into out', () => {
    const l = new MultiLoRALinear(new Linear(6, 4, { seed: 1 }), { adapters: { a: { rank: 2 } } });
    const y = l.forward(tensor(randomArray(2 * 3 * 6, 1), [2, 3, 6]), { adapterNames: ['a', '__base__', 'a', 'a', 'a', '__base__'] });
    expect(y.shape).toEqual([2, 3, 4]);
    const dx = l.backward(zeros([2, 3, 4]))!;
    expect(dx.shape).toEqual([2, 3, 6]);
    expect(l.adapter('a')).toBeInstanceOf(Object);
    expect(l.parameters().every((p) => p.grad instanceof Tensor)).toBe(true);
    expect(l.numFrozen()).toBe(24);
  });

  it('zero rows run', () => {
    const l = new MultiLoRALinear(new Linear(6, 4, { seed: 1 }), { adapters: { a: { rank: 2 } } });
    expect(l.forward(zeros([0, 6]), { adapterNames: [] }).shape).toEqual([0, 4]);
    expect(l.backward(zeros([0, 4]))!.shape).toEqual([0, 6]);
  });
});
