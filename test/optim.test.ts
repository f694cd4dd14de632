// Optimizers and gradient clipping as torch.optim specifies them: AdamW and SGD against float64
// references over several steps, only the given parameters move, accumulated gradients train like
// their sum, clip_grad_norm_'s norm and scaling, state dicts that resume bit for bit, and the errors.
//
// Tolerances: the kernels do fp32 arithmetic (as PyTorch on float32 tensors); after three steps on
// values of order 1 the difference from float64 is a few ulps of fp32, i.e. ~1e-7 relative. 1e-6
// leaves room for that and still fails on any wrong term (a missing bias correction or decay moves
// the numbers by 1e-2 or more here).
import { describe, expect, it } from 'vitest';
import { native } from '../lib/backends/cpu/binding';
import { AdamW, backendInfo, clipGradNorm, Linear, LinearLoRA, setNumThreads, SGD, Tensor, tensor, zeros } from '../lib/index';
import { randomArray, relErr } from './reference';
import { expectCode } from './expect-code';

/** A trainable parameter: values, shape, and a zero .grad. */
function param(values: ArrayLike<number>, shape: number[] = [values.length]): Tensor {
  const p = tensor(Float32Array.from(values), shape);
  p.grad = zeros(shape);
  return p;
}

function setGrad(p: Tensor, g: ArrayLike<number>): void {
  p.grad!.buffer().set(g);
}

interface AdamWRef { lr: number; b1: number; b2: number; eps: number; wd: number }

/** torch.optim.AdamW in float64: returns p, m, v after one step per gradient in `grads`. */
function refAdamW(p0: ArrayLike<number>, grads: ArrayLike<number>[], h: AdamWRef, opts = { biasCorrection: true, decay: true }) {
  const p = Float64Array.from(p0), m = new Float64Array(p.length), v = new Float64Array(p.length);
  grads.forEach((g, k) => {
    const t = k + 1;
    const bc1 = opts.biasCorrection ? 1 - h.b1 ** t : 1, bc2 = opts.biasCorrection ? 1 - h.b2 ** t : 1;
    for (let i = 0; i < p.length; i++) {
      if (opts.decay) p[i] *= 1 - h.lr * h.wd;
      m[i] = h.b1 * m[i] + (1 - h.b1) * g[i];
      v[i] = h.b2 * v[i] + (1 - h.b2) * g[i] * g[i];
      p[i] -= (h.lr * (m[i] / bc1)) / (Math.sqrt(v[i] / bc2) + h.eps);
    }
  });
  return { p, m, v };
}

interface SGDRef { lr: number; momentum: number; dampening: number; wd: number; nesterov: boolean }

/** torch.optim.SGD in float64. */
function refSGD(p0: ArrayLike<number>, grads: ArrayLike<number>[], h: SGDRef) {
  const p = Float64Array.from(p0), buf = new Float64Array(p.length);
  grads.forEach((g, k) => {
    for (let i = 0; i < p.length; i++) {
      let d = g[i] + h.wd * p[i];
      if (h.momentum !== 0) {
        buf[i] = k === 0 ? d : h.momentum * buf[i] + (1 - h.dampening) * d;
        d = h.nesterov ? d + h.momentum * buf[i] : buf[i];
      }
      p[i] -= h.lr * d;
    }
  });
  return { p, buf };
}

describe('AdamW', () => {
  it('a constant gradient: bias correction makes each step exactly lr·sign(g), after decay p·(1 − lr·wd): 0.85, 0.7075, 0.572125', () => {
    // m̂ = g and v̂ = g² exactly when g is constant, so p ← 0.95·p − 0.1·0.5/(0.5 + 1e-8).
    const p = param([1]);
    const opt = new AdamW([p], { lr: 0.1, weightDecay: 0.5 });
    const u = (0.1 * 0.5) / (0.5 + 1e-8);
    const want = [0.95 * 1 - u];
    want.push(0.95 * want[0] - u, 0.95 * (0.95 * want[0] - u) - u);
    expect(want[0]).toBeCloseTo(0.85, 7);
    expect(want[2]).toBeCloseTo(0.572125, 6);
    for (let t = 0; t < 3; t++) {
      setGrad(p, [0.5]);
      opt.step();
      expect(Math.abs(p.dataSync()[0] - want[t])).toBeLessThan(1e-6);
    }
    // Without the bias correction step 1 would give 0.95 − 0.1·0.05/√0.00025 ≈ 0.634; without the
    // decay, 0.9: both far outside the tolerance above.
    expect(Math.abs(refAdamW([1], [[0.5]], { lr: 0.1, b1: 0.9, b2: 0.999, eps: 1e-8, wd: 0.5 }, { biasCorrection: false, decay: true }).p[0] - 0.85)).toBeGreaterThan(0.1);
  });

  it('three steps with changing gradients match float64 (params and both moments), and the terms matter', () => {
    const h = { lr: 0.05, b1: 0.8, b2: 0.95, eps: 1e-3, wd: 0.2 };
    const A0 = randomArray(12, 1), B0 = randomArray(10, 2);
    const A = param(A0, [4, 3]), B = param(B0, [2, 5]);
    const opt = new AdamW([A, B], { lr: h.lr, betas: [h.b1, h.b2], eps: h.eps, weightDecay: h.wd });
    const gA = [0, 1, 2].map((k) => randomArray(12, 10 + k, 2));
    const gB = [0, 1, 2].map((k) => randomArray(10, 20 + k, 0.5));
    for (let k = 0; k < 3; k++) {
      setGrad(A, gA[k]);
      setGrad(B, gB[k]);
      opt.step();
      const rA = refAdamW(A0, gA.slice(0, k + 1), h), rB = refAdamW(B0, gB.slice(0, k + 1), h);
      const s = opt.stateDict();
      expect(s.step).toBe(k + 1);
      expect(relErr(A.dataSync(), rA.p)).toBeLessThan(1e-6);
      expect(relErr(B.dataSync(), rB.p)).toBeLessThan(1e-6);
      expect(relErr(s.tensors['param.0.exp_avg'], rA.m)).toBeLessThan(1e-6);
      expect(relErr(s.tensors['param.0.exp_avg_sq'], rA.v)).toBeLessThan(1e-6);
      expect(relErr(s.tensors['param.1.exp_avg'], rB.m)).toBeLessThan(1e-6);
      expect(relErr(s.tensors['param.1.exp_avg_sq'], rB.v)).toBeLessThan(1e-6);
    }
    const noBias = refAdamW(A0, gA, h, { biasCorrection: false, decay: true }).p;
    const noDecay = refAdamW(A0, gA, h, { biasCorrection: true, decay: false }).p;
    expect(relErr(A.dataSync(), noBias)).toBeGreaterThan(1e-2);
    expect(relErr(A.dataSync(), noDecay)).toBeGreaterThan(1e-3);
  });

  it('defaults are lr 1e-3, betas (0.9, 0.999), eps 1e-8, weightDecay 1e-2', () => {
    const p0 = randomArray(9, 5);
    const p = param(p0);
    const opt = new AdamW([p]);
    expect(opt.hyper).toEqual({ lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 1e-2 });
    const g = randomArray(9, 6);
    setGrad(p, g);
    opt.step();
    expect(relErr(p.dataSync(), refAdamW(p0, [g], { lr: 1e-3, b1: 0.9, b2: 0.999, eps: 1e-8, wd: 1e-2 }).p)).toBeLessThan(1e-6);
  });

  it('a tensor larger than one thread chunk (70,001 elements) matches float64 and has the same bits on 1 thread', () => {
    const n = 70_001;
    const h = { lr: 0.01, b1: 0.9, b2: 0.99, eps: 1e-8, wd: 0.1 };
    const p0 = randomArray(n, 7), g = randomArray(n, 8);
    const run = () => {
      const p = param(p0);
      const opt = new AdamW([p], { lr: h.lr, betas: [h.b1, h.b2], eps: h.eps, weightDecay: h.wd });
      for (let k = 0; k < 2; k++) {
        setGrad(p, g);
        opt.step();
      }
      return p.dataSync();
    };
    const threads = backendInfo().cpu.threads;
    const many = run();
    setNumThreads(1);
    const one = run();
    setNumThreads(threads);
    expect(relErr(many, refAdamW(p0, [g, g], h).p)).toBeLessThan(1e-6);
    expect(one).toEqual(many);
  });
});

describe('SGD', () => {
  const cases: Array<[string, SGDRef]> = [
    ['plain', { lr: 0.1, momentum: 0, dampening: 0, wd: 0, nesterov: false }],
    ['weight decay', { lr: 0.1, momentum: 0, dampening: 0, wd: 0.3, nesterov: false }],
    ['momentum + weight decay', { lr: 0.1, momentum: 0.9, dampening: 0, wd: 0.3, nesterov: false }],
    ['momentum + dampening', { lr: 0.05, momentum: 0.8, dampening: 0.5, wd: 0, nesterov: false }],
    ['nesterov + weight decay', { lr: 0.1, momentum: 0.9, dampening: 0, wd: 0.3, nesterov: true }],
  ];
  for (const [name, h] of cases) {
    it(`${name}: three steps match float64`, () => {
      const p0 = randomArray(15, 31);
      const p = param(p0, [3, 5]);
      const opt = new SGD([p], { lr: h.lr, momentum: h.momentum, dampening: h.dampening, weightDecay: h.wd, nesterov: h.nesterov });
      const grads = [0, 1, 2].map((k) => randomArray(15, 40 + k));
      grads.forEach((g, k) => {
        setGrad(p, g);
        opt.step();
        expect(relErr(p.dataSync(), refSGD(p0, grads.slice(0, k + 1), h).p)).toBeLessThan(1e-6);
      });
      if (h.momentum > 0) expect(relErr(opt.stateDict().tensors['param.0.momentum_buffer'], refSGD(p0, grads, h).buf)).toBeLessThan(1e-6);
      else expect(opt.stateDict().tensors).toEqual({});
    });
  }

  it('momentum and nesterov change the result (the cases above are not all plain SGD)', () => {
    const p0 = randomArray(15, 31), grads = [0, 1, 2].map((k) => randomArray(15, 40 + k));
    const plain = refSGD(p0, grads, cases[0][1]).p;
    const mom = refSGD(p0, grads, { ...cases[0][1], momentum: 0.9 }).p;
    const nest = refSGD(p0, grads, { ...cases[0][1], momentum: 0.9, nesterov: true }).p;
    expect(relErr(mom, plain)).toBeGreaterThan(1e-2);
    expect(relErr(nest, mom)).toBeGreaterThan(1e-2);
  });
});

describe('which parameters move', () => {
  function layerWithGrads(seed: number) {
    const I = 6, O = 5, r = 2;
    const layer = new LinearLoRA(new Linear(I, O, { seed }), r, { seed: seed + 1, B: randomArray(r * O, seed + 2) });
    layer.forward(tensor(randomArray(4 * I, seed + 3), [4, I]));
    layer.backward(tensor(randomArray(4 * O, seed + 4), [4, O]));
    return layer;
  }

  for (const [name, make] of [
    ['AdamW', (ps: Tensor[]) => new AdamW(ps, { lr: 0.1 })],
    ['SGD', (ps: Tensor[]) => new SGD(ps, { lr: 0.1, momentum: 0.9 })],
  ] as const) {
    it(`${name}: only the parameters given change; frozen W and b, other layers' A and B stay bit for bit`, () => {
      const a = layerWithGrads(1), b = layerWithGrads(11);
      const before = {
        aA: a.lora.A.dataSync(), aB: a.lora.B.dataSync(), aW: a.base.weight.dataSync(),
        bA: b.lora.A.dataSync(), bB: b.lora.B.dataSync(), bW: b.base.weight.dataSync(),
      };
      expect(b.lora.A.grad!.dataSync().some((v) => v !== 0)).toBe(true);  // b has gradients, yet must not move
      const opt = make([a.lora.A]);
      opt.step();
      expect(a.lora.A.dataSync()).not.toEqual(before.aA);
      expect(a.lora.B.dataSync()).toEqual(before.aB);
      expect(a.base.weight.dataSync()).toEqual(before.aW);
      expect(b.lora.A.dataSync()).toEqual(before.bA);
      expect(b.lora.B.dataSync()).toEqual(before.bB);
      expect(b.base.weight.dataSync()).toEqual(before.bW);
    });
  }

  it('zeroGrad clears the gradients of its parameters only', () => {
    const a = layerWithGrads(1), b = layerWithGrads(11);
    const opt = new AdamW(a.parameters());
    const bGrad = b.lora.A.grad!.dataSync();
    opt.zeroGrad();
    expect(a.lora.A.grad!.dataSync().every((v) => v === 0)).toBe(true);
    expect(a.lora.B.grad!.dataSync().every((v) => v === 0)).toBe(true);
    expect(b.lora.A.grad!.dataSync()).toEqual(bGrad);
  });
});

describe('gradient accumulation', () => {
  it('two micro-batches (two backward calls, one step) train like one batch of both', () => {
    const I = 7, O = 4, r = 3, M = 5;
    const base = new Linear(I, O, { seed: 3, bias: true });
    const B0 = randomArray(r * O, 4);
    const make = () => new LinearLoRA(base, r, { seed: 5, B: B0 });
    const x = randomArray(2 * M * I, 6), dy = randomArray(2 * M * O, 7);
    const acc = make(), whole = make();
    for (const h of [0, 1]) {
      acc.forward(tensor(x.slice(h * M * I, (h + 1) * M * I), [M, I]));
      acc.backward(tensor(dy.slice(h * M * O, (h + 1) * M * O), [M, O]));
    }
    whole.forward(tensor(x, [2 * M, I]));
    whole.backward(tensor(dy, [2 * M, O]));
    // The same sums in another order: fp32 rounding only.
    expect(relErr(acc.lora.A.grad!.dataSync(), whole.lora.A.grad!.dataSync())).toBeLessThan(1e-6);
    expect(relErr(acc.lora.B.grad!.dataSync(), whole.lora.B.grad!.dataSync())).toBeLessThan(1e-6);
    const A0 = acc.lora.A.dataSync();
    const gA = Float64Array.from(whole.lora.A.grad!.dataSync());
    const o1 = new SGD(acc.parameters(), { lr: 0.5 }), o2 = new SGD(whole.parameters(), { lr: 0.5 });
    o1.step();
    o2.step();
    expect(relErr(acc.lora.A.dataSync(), whole.lora.A.dataSync())).toBeLessThan(1e-6);
    expect(relErr(acc.lora.A.dataSync(), A0.map((a, i) => a - 0.5 * gA[i]))).toBeLessThan(1e-6);
    expect(relErr(acc.lora.A.dataSync(), A0)).toBeGreaterThan(1e-3);  // the step did move A
  });

  it('step() reads the gradient as accumulated: a second backward doubles it', () => {
    const p0 = randomArray(6, 9), g = randomArray(6, 10);
    const p = param(p0);
    setGrad(p, g);
    const gb = p.grad!.buffer();
    for (let i = 0; i < 6; i++) gb[i] += g[i];  // what a second backward with the same input adds
    new SGD([p], { lr: 0.25 }).step();
    expect(relErr(p.dataSync(), Array.from(p0, (v, i) => v - 0.25 * 2 * g[i]))).toBeLessThan(1e-6);
  });
});

describe('clipGradNorm', () => {
  function twoParams() {
    const a = param(randomArray(12, 50), [3, 4]), b = param(randomArray(5, 51), [5]);
    setGrad(a, randomArray(12, 52, 3));
    setGrad(b, randomArray(5, 53, 3));
    return [a, b];
  }
  const norm64 = (ps: Tensor[]) => Math.sqrt(ps.reduce((s, p) => s + p.grad!.dataSync().reduce((t, v) => t + v * v, 0), 0));

  it('returns the total L2 norm of all gradients and scales them by maxNorm / (norm + 1e-6) when above', () => {
    const ps = twoParams();
    const grads = ps.map((p) => Float64Array.from(p.grad!.dataSync()));
    const want = norm64(ps);
    const got = clipGradNorm(ps, 1.5);
    expect(Math.abs(got - want) / want).toBeLessThan(1e-12);  // double accumulation of exact squares
    const coef = 1.5 / (want + 1e-6);
    ps.forEach((p, i) => expect(relErr(p.grad!.dataSync(), grads[i].map((v) => v * coef))).toBeLessThan(1e-6));
    expect(Math.abs(norm64(ps) - 1.5)).toBeLessThan(1e-5);
    expect(ps[0].dataSync()).toEqual(Float32Array.from(randomArray(12, 50)));  // parameters untouched
  });

  it('leaves gradients bit for bit when the norm is below maxNorm', () => {
    const ps = twoParams();
    const before = ps.map((p) => p.grad!.dataSync());
    const n = clipGradNorm(ps, 100);
    expect(n).toBeGreaterThan(1);
    ps.forEach((p, i) => expect(p.grad!.dataSync()).toEqual(before[i]));
  });

  it('sums in double over tensors larger than one block, with the same bits on 1 thread', () => {
    const p = param(new Float32Array(100_003));
    setGrad(p, randomArray(100_003, 60));
    const want = norm64([p]);
    const threads = backendInfo().cpu.threads;
    const many = clipGradNorm([p], 1e9);
    setNumThreads(1);
    const one = clipGradNorm([p], 1e9);
    setNumThreads(threads);
    expect(Math.abs(many - want) / want).toBeLessThan(1e-12);
    expect(one).toBe(many);
  });

  it('a NaN gradient: NaN norm and NaN gradients (as torch), or ERR_NOT_FINITE with nothing changed', () => {
    const ps = twoParams();
    ps[1].grad!.buffer()[2] = NaN;
    const before = ps[0].grad!.dataSync();
    expectCode(() => clipGradNorm(ps, 1, { errorIfNonfinite: true }), 'ERR_NOT_FINITE');
    expect(ps[0].grad!.dataSync()).toEqual(before);
    expect(clipGradNorm(ps, 1)).toBeNaN();
    expect(ps[0].grad!.dataSync().every((v) => Number.isNaN(v))).toBe(true);
  });

  it('skips parameters without a gradient, gives 0 for none, and refuses bad arguments', () => {
    const ps = twoParams();
    const frozen = tensor(new Float32Array([100, 100]));
    expect(clipGradNorm([...ps, frozen], 1e9)).toBeCloseTo(norm64(ps), 10);
    expect(clipGradNorm([], 1)).toBe(0);
    expectCode(() => clipGradNorm(ps, -1), 'ERR_ARGUMENT');
    expectCode(() => clipGradNorm(ps, NaN), 'ERR_ARGUMENT');
    expectCode(() => clipGradNorm([ps[0], ps[0]], 1), 'ERR_ARGUMENT');
    expectCode(() => clipGradNorm('grads' as unknown as Tensor[], 1), 'ERR_ARGUMENT');
  });
});

describe('stateDict / loadStateDict', () => {
  function run(make: (ps: Tensor[]) => AdamW | SGD) {
    const A = param(randomArray(8, 70), [4, 2]), B = param(randomArray(6, 71), [2, 3]);
    const opt = make([A, B]);
    const grads = [0, 1, 2, 3, 4].map((k) => [randomArray(8, 80 + k), randomArray(6, 90 + k)]);
    return { A, B, opt, grads };
  }

  for (const [name, make] of [
    ['AdamW', (ps: Tensor[]) => new AdamW(ps, { lr: 0.05, betas: [0.8, 0.9], weightDecay: 0.1 })],
    ['SGD with nesterov momentum', (ps: Tensor[]) => new SGD(ps, { lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 0.1 })],
  ] as const) {
    it(`${name}: a fresh optimizer loaded from the dict continues bit for bit like the original`, () => {
      const a = run(make);
      for (let k = 0; k < 3; k++) {
        setGrad(a.A, a.grads[k][0]);
        setGrad(a.B, a.grads[k][1]);
        a.opt.step();
      }
      const state = a.opt.stateDict();
      expect(state.step).toBe(3);
      expect(JSON.parse(JSON.stringify({ kind: state.kind, step: state.step, hyper: state.hyper }))).toEqual({ kind: state.kind, step: 3, hyper: state.hyper });
      expect(Object.values(state.tensors).every((t) => t instanceof Float32Array)).toBe(true);
      const snapshot = structuredClone(state);

      // A resumed run: parameters as saved, a new optimizer built with other hyperparameters.
      const b = run((ps) => (a.opt.kind === 'adamw' ? new AdamW(ps, { lr: 1 }) : new SGD(ps, { lr: 1 })));
      b.A.buffer().set(a.A.buffer());
      b.B.buffer().set(a.B.buffer());
      b.opt.loadStateDict(state);
      expect(b.opt.stepCount).toBe(3);
      expect(b.opt.hyper).toEqual(a.opt.hyper);
      for (let k = 3; k < 5; k++) {
        for (const r of [a, b]) {
          setGrad(r.A, a.grads[k][0]);
          setGrad(r.B, a.grads[k][1]);
          r.opt.step();
        }
      }
      expect(b.A.dataSync()).toEqual(a.A.dataSync());
      expect(b.B.dataSync()).toEqual(a.B.dataSync());
      expect(b.opt.stateDict()).toEqual(a.opt.stateDict());
      expect(state).toEqual(snapshot);  // the dict was a copy: later steps did not change it
    });
  }

  it('SGD: the momentum buffer of a dict saved before any step is initialised by the next step', () => {
    const a = run((ps) => new SGD(ps, { lr: 0.1, momentum: 0.9 }));
    const b = run((ps) => new SGD(ps, { lr: 0.1, momentum: 0.9 }));
    b.opt.loadStateDict(a.opt.stateDict());
    for (const r of [a, b]) {
      setGrad(r.A, a.grads[0][0]);
      setGrad(r.B, a.grads[0][1]);
      r.opt.step();
    }
    expect(b.A.dataSync()).toEqual(a.A.dataSync());
    expect(b.opt.stateDict().tensors['param.0.momentum_buffer']).toEqual(Float32Array.from(a.grads[0][0]));
  });

  it('a bad dict is refused with a code, and the optimizer is unchanged', () => {
    const a = run((ps) => new AdamW(ps, { lr: 0.05 }));
    setGrad(a.A, a.grads[0][0]);
    a.opt.step();
    const before = a.opt.stateDict();
    // Each bad dict also carries another step, lr and moments, so a partial load would show.
    const t = Object.fromEntries(Object.entries(before.tensors).map(([k, v]) => [k, v.map((x) => x + 1)]));
    const good = { ...before, step: 7, hyper: { ...before.hyper, lr: 0.9 }, tensors: t };
    const bad: Array<[string, unknown, string]> = [
      ['another kind', { ...good, kind: 'sgd' }, 'ERR_ARGUMENT'],
      ['a negative step', { ...good, step: -1 }, 'ERR_ARGUMENT'],
      ['a fractional step', { ...good, step: 1.5 }, 'ERR_ARGUMENT'],
      ['bad hyper', { ...good, hyper: { ...good.hyper, betas: [1, 0.9] } }, 'ERR_ARGUMENT'],
      ['a missing tensor', { ...good, tensors: { ...t, 'param.1.exp_avg': undefined } }, 'ERR_ARGUMENT'],
      ['an extra tensor', { ...good, tensors: { ...t, 'param.2.exp_avg': new Float32Array(3) } }, 'ERR_ARGUMENT'],
      ['a wrong length', { ...good, tensors: { ...t, 'param.1.exp_avg_sq': new Float32Array(5) } }, 'ERR_SHAPE'],
      ['a Float64Array', { ...good, tensors: { ...t, 'param.0.exp_avg': new Float64Array(8) } }, 'ERR_DTYPE'],
      ['not an object', null, 'ERR_ARGUMENT'],
    ];
    for (const [, state, code] of bad) {
      expectCode(() => a.opt.loadStateDict(state as never), code);
      expect(a.opt.stateDict()).toEqual(before);
      expect(a.opt.stepCount).toBe(1);
    }
    a.opt.loadStateDict(good);  // the same dict without its defect loads
    expect(a.opt.stepCount).toBe(7);
    expect(a.opt.lr).toBe(0.9);
    expect(a.opt.stateDict().tensors).toEqual(t);
  });
});

describe('errors', () => {
  const p = () => param([1, 2, 3]);

  it('bad options are ERR_ARGUMENT', () => {
    const bad: Array<() => unknown> = [
      () => new AdamW([p()], { lr: 0 }),
      () => new AdamW([p()], { lr: -1 }),
      () => new AdamW([p()], { lr: NaN }),
      () => new AdamW([p()], { lr: Infinity }),
      () => new AdamW([p()], { lr: '0.1' as unknown as number }),
      () => new AdamW([p()], { betas: [1, 0.999] }),
      () => new AdamW([p()], { betas: [0.9, -0.1] }),
      () => new AdamW([p()], { betas: [0.9] as unknown as [number, number] }),
      () => new AdamW([p()], { eps: 0 }),
      () => new AdamW([p()], { weightDecay: -1e-3 }),
      () => new AdamW([p()], 'fast' as never),
      () => new SGD([p()], {} as never),
      () => new SGD([p()], { lr: 0.1, momentum: -0.5 }),
      () => new SGD([p()], { lr: 0.1, weightDecay: NaN }),
      () => new SGD([p()], { lr: 0.1, dampening: Infinity }),
      () => new SGD([p()], { lr: 0.1, nesterov: true }),
      () => new SGD([p()], { lr: 0.1, momentum: 0.9, dampening: 0.1, nesterov: true }),
      () => new SGD([p()], { lr: 0.1, nesterov: 'yes' as unknown as boolean }),
    ];
    bad.forEach((fn) => expectCode(fn, 'ERR_ARGUMENT'));
    const opt = new AdamW([p()]);
    expectCode(() => (opt.lr = 0), 'ERR_ARGUMENT');
    opt.lr = 0.5;
    expect(opt.lr).toBe(0.5);
  });

  it('params must be live Tensors, each once, with a .grad of their shape', () => {
    expectCode(() => new AdamW('A' as never), 'ERR_ARGUMENT');
    expectCode(() => new AdamW([]), 'ERR_ARGUMENT');
    expectCode(() => new AdamW([new Float32Array(3)] as never), 'ERR_ARGUMENT');
    expectCode(() => new AdamW([tensor([1, 2])]), 'ERR_ARGUMENT');  // no .grad: not trainable
    const wrong = tensor([1, 2, 3, 4], [2, 2]);
    wrong.grad = zeros([4]);
    expectCode(() => new SGD([wrong], { lr: 1 }), 'ERR_ARGUMENT');
    const q = p();
    expectCode(() => new AdamW([q, q]), 'ERR_ARGUMENT');
    const gone = p();
    gone.dispose();
    expectCode(() => new AdamW([gone]), 'ERR_DISPOSED');
  });

  it('a parameter disposed after construction: step() is ERR_DISPOSED and changes no parameter', () => {
    const a = p(), b = p();
    setGrad(a, [1, 1, 1]);
    setGrad(b, [1, 1, 1]);
    const opt = new AdamW([a, b], { lr: 0.1 });
    b.dispose();
    expectCode(() => opt.step(), 'ERR_DISPOSED');
    expect(a.dataSync()).toEqual(new Float32Array([1, 2, 3]));
    expect(opt.stepCount).toBe(0);
  });

  it('a disposed optimizer is ERR_DISPOSED', () => {
    const opt = new SGD([p()], { lr: 0.1, momentum: 0.9 });
    opt.dispose();
    expectCode(() => opt.step(), 'ERR_DISPOSED');
    expectCode(() => opt.zeroGrad(), 'ERR_DISPOSED');
    expectCode(() => opt.stateDict(), 'ERR_DISPOSED');
  });

  it('the native layer checks buffers again (a direct call with a short or mistyped buffer)', () => {
    const f = (n: number) => new Float32Array(n);
    const args = { n: 4, param: f(4), grad: f(4), expAvg: f(4), expAvgSq: f(3), lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0, step: 1 };
    expectCode(() => native.adamwStep(args), 'ERR_SHAPE');
    expectCode(() => native.adamwStep({ ...args, expAvgSq: new Float64Array(4) as never }), 'ERR_DTYPE');
    expectCode(() => native.adamwStep({ ...args, expAvgSq: f(4), beta1: 1 }), 'ERR_ARGUMENT');
    expectCode(() => native.adamwStep({ ...args, expAvgSq: f(4), step: 0 }), 'ERR_ARGUMENT');
    expectCode(() => native.sgdStep({ n: 4, param: f(4), grad: f(4), momentumBuffer: null, lr: 0.1, momentum: 0.9, dampening: 0, weightDecay: 0, nesterov: false, firstStep: true }), 'ERR_DTYPE');
  });
});
