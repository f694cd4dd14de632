// Properties of the public API, checked with fast-check on random cases (small shapes: each case
// costs well under a millisecond of kernel time, so the whole file stays within a few seconds).
//
//   valid  — random shapes (rank-1 to rank-3 inputs, M = 0 included), bias or not, fused or not,
//            rsLoRA, alpha, dropout: the layer, ops.* and their async twins equal the float64
//            reference of test/reference.ts within 1e-5 (Frobenius), relative to the reference run
//            on |inputs| (the usual bound of a float32 dot product: with I = 1 or O = 1, terms can
//            cancel, and an error relative to the cancelled result alone says nothing).
//   invalid — a random call of the public API with one argument replaced by a random bad value is a
//            LoraError (thrown, or a rejection for async calls) with a documented code: never a
//            crash, a hang, a TypeError/RangeError, or a silent success; and a layer used before and
//            after the whole barrage computes the same outputs and gradients, bit for bit.
//
// Reproduce a failure with the seed fast-check prints: FC_SEED=<seed> npx vitest run test/property.test.ts
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  AdamW, applyLoRA, clipGradNorm, crossEntropyLoss, GELU, gelu, Linear, LinearLoRA, LoRA, LoraError, mseLoss, ops, ReLU,
  relu, saveAdapter, loadAdapter, Sequential, setNumThreads, SGD, Tensor, tensor, zeros,
} from '../lib/index';
import { makeProblem, randomArray, refBackward, refForward, relErr } from './reference';

const TOL = 1e-5;
const CODES = new Set(['ERR_SHAPE', 'ERR_DTYPE', 'ERR_DEVICE', 'ERR_DISPOSED', 'ERR_NOT_FINITE', 'ERR_BACKEND', 'ERR_IO', 'ERR_ARGUMENT']);
const seedParam = process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {};
const RUNS = { layer: 120, ops: 80, dropout: 50, invalid: 600 };

/** Leading dimensions (1 to 3 of them, each 0..4) and the M they flatten to. */
const leadDims = fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 1, maxLength: 3 });
const problemArb = fc.record({
  lead: leadDims,
  I: fc.integer({ min: 1, max: 20 }),
  O: fc.integer({ min: 1, max: 20 }),
  r: fc.integer({ min: 1, max: 8 }),
  bias: fc.boolean(),
  fused: fc.boolean(),
  rslora: fc.boolean(),
  alpha: fc.double({ min: 0.25, max: 32, noNaN: true }),
  seed: fc.integer({ min: 0, max: 1e6 }),
});

const product = (dims: number[]) => dims.reduce((a, b) => a * b, 1);

type Problem = ReturnType<typeof makeProblem>;
const absF = (a: Float32Array) => a.map(Math.abs);
/** The problem on |values|: its outputs bound the magnitude of every term the kernels sum. */
const absProblem = (P: Problem): Problem => ({ ...P, x: absF(P.x), W: absF(P.W), bias: P.bias && absF(P.bias), A: absF(P.A), B: absF(P.B), scaling: Math.abs(P.scaling) });
const norm = (a: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * a[i];
  return Math.sqrt(s);
};
/** ‖got − want‖ / max(‖bound‖, 1e-30): relErr with the magnitude of the terms as the denominator. */
function errVs(got: ArrayLike<number>, want: ArrayLike<number>, bound: ArrayLike<number>): number {
  return relErr(got, want) * Math.max(norm(want), 1e-30) / Math.max(norm(bound), norm(want), 1e-30);
}
/** The float64 forward and backward, and their bounds. */
function reference(P: Problem, dy: Float32Array) {
  const B = absProblem(P);
  return { f: refForward(P), b: refBackward(P, dy), fAbs: refForward(B), bAbs: refBackward(B, absF(dy)) };
}

describe(`valid shapes equal the float64 reference (fast-check, ${RUNS.layer + RUNS.ops + RUNS.dropout} runs in 3 properties)`, () => {
  it(`LinearLoRA forward, backward and the accumulated gradients, sync and async (${RUNS.layer} runs)`, async () => {
    await fc.assert(
      fc.asyncProperty(problemArb, async ({ lead, I, O, r, bias, fused, rslora, alpha, seed }) => {
        const M = product(lead);
        const P = makeProblem(M, I, O, r, seed, bias);
        const make = () => new LinearLoRA(new Linear(I, O, { weight: P.W, bias: P.bias ?? undefined }), r, { alpha, rslora, fused, A: P.A, B: P.B });
        const layer = make();
        P.scaling = layer.scaling;
        const x = tensor(P.x, [...lead, I]);
        const dy = randomArray(M * O, seed + 9);
        const R = reference(P, dy);
        const y = layer.forward(x);
        expect(y.shape).toEqual([...lead, O]);
        expect(errVs(y.dataSync(), R.f.y, R.fAbs.y)).toBeLessThanOrEqual(TOL);
        const dx = layer.backward(tensor(dy, [...lead, O]))!;
        expect(dx.shape).toEqual([...lead, I]);
        expect(errVs(dx.dataSync(), R.b.dx, R.bAbs.dx)).toBeLessThanOrEqual(TOL);
        expect(errVs(layer.lora.A.grad!.dataSync(), R.b.dA, R.bAbs.dA)).toBeLessThanOrEqual(TOL);
        expect(errVs(layer.lora.B.grad!.dataSync(), R.b.dB, R.bAbs.dB)).toBeLessThanOrEqual(TOL);
        // The async twins on a second layer: the same bits.
        const twin = make();
        const ya = await twin.forwardAsync(x);
        const dxa = await twin.backwardAsync(dy);
        expect(ya.dataSync()).toEqual(y.dataSync());
        expect(dxa!.dataSync()).toEqual(dx.dataSync());
        // A second backward accumulates: the gradients double (exactly, in float32).
        layer.backward(dy, { inputGrad: false });
        expect(errVs(layer.lora.B.grad!.dataSync(), R.b.dB.map((v) => 2 * v), R.bAbs.dB.map((v) => 2 * v))).toBeLessThanOrEqual(TOL);
      }),
      { numRuns: RUNS.layer, ...seedParam },
    );
  });

  it(`ops.loraForward / loraBackward on Float32Arrays with explicit dimensions, and their async twins (${RUNS.ops} runs)`, async () => {
    await fc.assert(
      fc.asyncProperty(problemArb, fc.boolean(), async ({ lead, I, O, r, bias, fused, seed }, inputGrad) => {
        const M = product(lead);
        const P = makeProblem(M, I, O, r, seed, bias);
        const dy = randomArray(M * O, seed + 9);
        const f = ops.loraForward({ x: P.x, weight: P.W, bias: P.bias, A: P.A, B: P.B, scaling: P.scaling, M, I, O, r, fused });
        const R = reference(P, dy);
        expect(errVs(f.y.dataSync(), R.f.y, R.fAbs.y)).toBeLessThanOrEqual(TOL);
        expect(errVs(f.s.dataSync(), R.f.s, R.fAbs.s)).toBeLessThanOrEqual(TOL);
        const b = ops.loraBackward({ x: P.x, s: f.s, dy, weight: P.W, A: P.A, B: P.B, scaling: P.scaling, M, I, O, r, fused, inputGrad });
        if (inputGrad) expect(errVs(b.dx!.dataSync(), R.b.dx, R.bAbs.dx)).toBeLessThanOrEqual(TOL);
        else expect(b.dx).toBeNull();
        expect(errVs(b.dA.dataSync(), R.b.dA, R.bAbs.dA)).toBeLessThanOrEqual(TOL);
        expect(errVs(b.dB.dataSync(), R.b.dB, R.bAbs.dB)).toBeLessThanOrEqual(TOL);
        const fa = await ops.loraForwardAsync({ x: P.x, weight: P.W, bias: P.bias, A: P.A, B: P.B, scaling: P.scaling, M, I, O, r, fused });
        expect(fa.y.dataSync()).toEqual(f.y.dataSync());
        const ba = await ops.loraBackwardAsync({ x: P.x, s: f.s, dy, weight: P.W, A: P.A, B: P.B, scaling: P.scaling, M, I, O, r, fused, inputGrad });
        expect(ba.dA.dataSync()).toEqual(b.dA.dataSync());
      }),
      { numRuns: RUNS.ops, ...seedParam },
    );
  });

  it(`dropout p in [0, 0.9]: the layer equals the reference with the mask it drew; eval mode drops nothing (${RUNS.dropout} runs)`, () => {
    fc.assert(
      fc.property(problemArb, fc.double({ min: 0, max: 0.9, noNaN: true }), ({ lead, I, O, r, bias, fused, seed }, p) => {
        const M = product(lead);
        const P = makeProblem(M, I, O, r, seed, bias);
        const layer = new LinearLoRA(new Linear(I, O, { weight: P.W, bias: P.bias ?? undefined }), r, { alpha: P.scaling * r, A: P.A, B: P.B, dropout: p, fused, seed });
        const y = layer.forward(P.x).dataSync();
        const mask = layer.lastDropoutMask;
        if (p === 0) expect(mask).toBeNull();
        const withMask = mask ? { ...P, mask: mask.slice(), p } : P;
        const dy = randomArray(M * O, seed + 9);
        const R = reference(withMask, dy);
        expect(errVs(y, R.f.y, R.fAbs.y)).toBeLessThanOrEqual(TOL);
        const dx = layer.backward(dy)!.dataSync();
        expect(errVs(dx, R.b.dx, R.bAbs.dx)).toBeLessThanOrEqual(TOL);
        expect(errVs(layer.lora.A.grad!.dataSync(), R.b.dA, R.bAbs.dA)).toBeLessThanOrEqual(TOL);
        // In eval mode there is no dropout: the plain reference.
        layer.eval();
        const plain = reference(P, dy);
        expect(errVs(layer.forward(P.x).dataSync(), plain.f.y, plain.fAbs.y)).toBeLessThanOrEqual(TOL);
      }),
      { numRuns: RUNS.dropout, ...seedParam },
    );
  });
});

// ------------------------------------------------------------------------------------------------
// Invalid arguments. Each case is one public call with one argument replaced by a value drawn from
// an arbitrary of values that are all invalid there. The subject layer is shared by every run, so
// damage from any refused call would show in the survival check at the end of each run.

const M = 3, I = 5, O = 4, r = 2;
const P0 = makeProblem(M, I, O, r, 11);
const X = tensor(P0.x, [M, I]);
const DY = tensor(randomArray(M * O, 12), [M, O]);

/** Values that are never a Tensor or Float32Array. */
const notTensor = fc.oneof(
  fc.constantFrom<unknown>(undefined, null, true, 0, -1, NaN, 'x', [], [1, 2, 3], {}, Symbol('s'), 3n, () => 1, new Map(), new ArrayBuffer(8)),
  fc.string(), fc.double(), fc.array(fc.double(), { maxLength: 6 }),
);
/** Typed arrays of the wrong dtype (and DataView). */
const wrongDtype = fc.integer({ min: 0, max: 30 }).chain((n) =>
  fc.constantFrom<unknown>(new Float64Array(n), new Int32Array(n), new Uint8Array(n), new Int16Array(n), new BigInt64Array(n), new DataView(new ArrayBuffer(n))),
);
/** A Float32Array whose length is not a multiple of `k`. */
const badLength = (k: number) => fc.integer({ min: 0, max: 40 }).filter((n) => n % k !== 0).map((n) => new Float32Array(n));
/** A Float32Array of any length but `n`. */
const wrongLength = (n: number) => fc.integer({ min: 0, max: 40 }).filter((k) => k !== n).map((k) => new Float32Array(k));
/** A valid shape for 4 elements (excluded where a bad shape is wanted). */
const isShapeOf4 = (v: unknown) => Array.isArray(v) && v.every((d) => Number.isInteger(d) && d >= 0) && v.reduce((a: number, b: number) => a * b, 1) === 4;
/** Values that are not a dimension >= min (non-integers, out of range, not numbers). */
const badDim = (min: number) => fc.oneof(
  fc.constantFrom<unknown>(NaN, Infinity, -Infinity, 1.5, -1, 2 ** 31, 2 ** 53, 2 ** 60, '3', null, true, 3n, [3], {}),
  fc.integer({ max: min - 1 }),
  fc.double({ noNaN: true }).filter((v) => !Number.isInteger(v)),
);
/** Not a finite number. */
const badFinite = fc.constantFrom<unknown>(NaN, Infinity, -Infinity, '1', null, true, 1n, [1], {});
/** Not an options object (undefined is valid everywhere: it means defaults). */
const badOptions = fc.constantFrom<unknown>(null, 'opts', 3, true, [1], Symbol('o'), () => ({}));
/** A hand-built Tensor whose shape is wrong (negative, fractional, NaN) or whose storage is short. */
const badHandBuilt = (last: number) => fc.constantFrom<() => Tensor>(
  () => new Tensor(new Float32Array(2 * last), [-2, -1, last]),
  () => new Tensor(new Float32Array(2 * last), [2.5, 0.8, last]),
  () => new Tensor(new Float32Array(last), [NaN, last]),
  () => new Tensor(new Float32Array(last), [2, last]),
  () => new Tensor(new Float32Array(3 * last), [2, last]),
  () => new Tensor(new Float32Array(last), '1,5' as never),
).map((f) => f());
const disposedTensor = (shape: number[]) => fc.constant(null).map(() => { const t = zeros(shape); t.dispose(); return t; });
// A resizable ArrayBuffer (ES2024; Node 20 has it, the TS lib here does not declare the option).
const ResizableBuffer = ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => ArrayBuffer;
const resizable = (n: number) => fc.constant(null).map(() => new Float32Array(new ResizableBuffer(4 * n, { maxByteLength: 8 * n })));

/** A bad x for a layer of I inputs. */
const badX = fc.oneof(notTensor, wrongDtype, badLength(I), badHandBuilt(I), disposedTensor([M, I]), resizable(M * I),
  fc.integer({ min: 0, max: 6 }).filter((k) => k !== I).map((k) => zeros([M, k])));
const badDy = fc.oneof(notTensor, wrongDtype, badLength(O), badHandBuilt(O), disposedTensor([M, O]),
  fc.integer({ min: 0, max: 8 }).filter((m) => m !== M).map((m) => zeros([m, O])));

interface Ctx { layer: LinearLoRA }
type Case = [name: string, arb: fc.Arbitrary<unknown>, call: (ctx: Ctx, bad: unknown) => unknown];

const cases: Case[] = [
  // Tensors
  ['tensor(data)', notTensor.filter((v) => !Array.isArray(v) || v.length !== 4), (_, v) => tensor(v as never, [2, 2])],
  ['tensor(shape)', fc.oneof(notTensor.filter((v) => v !== undefined && v !== null && !isShapeOf4(v))  /* null, like undefined, means [data.length] */, fc.array(badDim(0), { minLength: 1, maxLength: 3 }), fc.constant([2 ** 31, 2 ** 31])), (_, v) => tensor(new Float32Array(4), v as never)],
  ['tensor(options)', fc.oneof(badOptions, fc.record({ dtype: fc.constantFrom('float16', 'int32', 1) }), fc.record({ device: fc.constantFrom('cuda:7', 'gpu', 0) })), (_, v) => tensor(new Float32Array(4), [4], v as never)],
  ['zeros(shape)', fc.oneof(fc.array(badDim(0), { minLength: 1, maxLength: 3 }), fc.constant([2 ** 31, 2 ** 31]), fc.constant([2 ** 31 - 1, 4])), (_, v) => zeros(v as never)],
  ['Tensor.reshape', fc.oneof(fc.array(badDim(0), { minLength: 1, maxLength: 3 }), fc.constant([7])), (_, v) => X.reshape(v as never)],
  // Modules
  ['new Linear(I)', badDim(1), (_, v) => new Linear(v as never, O)],
  ['new Linear(options.weight)', fc.oneof(notTensor.filter((v) => v !== undefined), wrongDtype, wrongLength(O * I), disposedTensor([O, I])), (_, v) => new Linear(I, O, { weight: v as never })],
  ['new LoRA(rank)', badDim(1), (_, v) => new LoRA(I, O, v as never)],
  ['new LoRA(options.alpha)', fc.oneof(badFinite, fc.constantFrom<unknown>(1e39, -1e300, Number.MAX_VALUE)), (_, v) => new LoRA(I, O, r, { alpha: v as never })],
  ['LoRA.configure(options)', fc.oneof(badOptions, fc.record({ alpha: badFinite }), fc.record({ rslora: fc.constantFrom<unknown>(1, 'yes', null) })), (_, v) => new LoRA(I, O, r).configure(v as never)],
  ['new LinearLoRA(base)', notTensor, (_, v) => new LinearLoRA(v as never, r)],
  ['new LinearLoRA(rank)', badDim(1), (ctx, v) => new LinearLoRA(ctx.layer.base, v as never)],
  ['new LinearLoRA(options.dropout)', fc.oneof(fc.constantFrom<unknown>(1, 1 - 2 ** -30, 1.5, -0.1, NaN, Infinity, '0.1', null, true), fc.double({ min: 1, noNaN: true }), fc.double({ max: -1e-9, noNaN: true })), (ctx, v) => new LinearLoRA(ctx.layer.base, r, { dropout: v as never })],
  ['new LinearLoRA(options.seed)', fc.constantFrom<unknown>(-1, 1.5, NaN, 2 ** 53 + 2, '5', null), (ctx, v) => new LinearLoRA(ctx.layer.base, r, { seed: v as never })],
  ['new LinearLoRA(options.A)', fc.oneof(wrongDtype, wrongLength(I * r), fc.constant(Float32Array.from({ length: I * r }, (_, i) => (i === 3 ? NaN : 0)))), (ctx, v) => new LinearLoRA(ctx.layer.base, r, { A: v as never })],
  ['new LinearLoRA(options)', badOptions, (ctx, v) => new LinearLoRA(ctx.layer.base, r, v as never)],
  ['layer.train(mode)', fc.constantFrom<unknown>('no', 0, 1, null, {}), (ctx, v) => ctx.layer.train(v as never)],
  // The subject layer's calls
  ['layer.forward(x)', badX, (ctx, v) => ctx.layer.forward(v as never)],
  ['layer.forward(x, options)', fc.oneof(badOptions, fc.record({ out: fc.oneof(notTensor.filter((v) => v !== undefined), disposedTensor([M, O]), fc.constant(null).map(() => zeros([M, O + 1]))) })), (ctx, v) => ctx.layer.forward(X, v as never)],
  ['layer.forward(x, { out: aliasing x })', fc.constant(null), (ctx) => { const x = tensor(randomArray(M * I, 3), [M, I]); return ctx.layer.forward(x, { out: new Tensor(x.buffer().subarray(0, M * O), [M, O]) }); }],
  ['layer.backward(dy)', badDy, (ctx, v) => { ctx.layer.forward(X); return ctx.layer.backward(v as never); }],
  ['layer.backward(dy, options)', fc.oneof(badOptions, fc.record({ inputGrad: fc.constantFrom<unknown>('no', 0, null) }), fc.record({ out: fc.constant(null).map(() => zeros([M, I + 1])) })), (ctx, v) => { ctx.layer.forward(X); return ctx.layer.backward(DY, v as never); }],
  ['layer.backward(dy, { out: aliasing the saved x })', fc.constant(null), (ctx) => { const x = tensor(P0.x.slice(), [M, I]); ctx.layer.forward(x); return ctx.layer.backward(DY, { out: x }); }],
  ['layer.forwardAsync(x)', badX, (ctx, v) => ctx.layer.forwardAsync(v as never)],
  ['layer.forwardAsync(x, { signal })', fc.constantFrom<unknown>('abort', {}, 1, { aborted: true }), (ctx, v) => ctx.layer.forwardAsync(X, { signal: v as never })],
  ['layer.forwardAsync(x, { signal: aborted })', fc.constant(null), (ctx) => ctx.layer.forwardAsync(X, { signal: AbortSignal.abort() })],
  ['layer.backwardAsync(dy)', badDy, async (ctx, v) => { await ctx.layer.forwardAsync(X); return ctx.layer.backwardAsync(v as never); }],
  // ops
  ['ops.loraForward(input)', fc.oneof(notTensor, fc.record({ x: notTensor })), (_, v) => ops.loraForward(v as never)],
  ['ops.loraForward(operand)', fc.constantFrom(['x', M * I], ['weight', O * I], ['A', I * r], ['B', r * O]).chain(([k, n]) => fc.tuple(fc.constant(k), fc.oneof(notTensor, wrongDtype, wrongLength(n as number)))), (_, v) => {
    const [k, bad] = v as [string, unknown];
    return ops.loraForward({ x: P0.x, weight: P0.W, A: P0.A, B: P0.B, scaling: 1, M, I, O, r, [k]: bad } as never);
  }],
  ['ops.loraForward(dims)', fc.tuple(fc.constantFrom('M', 'I', 'O', 'r'), badDim(1)), (_, v) => {
    const [k, bad] = v as [string, unknown];
    return ops.loraForward({ x: P0.x, weight: P0.W, A: P0.A, B: P0.B, scaling: 1, M, I, O, r, [k]: bad } as never);
  }],
  ['ops.loraForward(scaling, fused)', fc.oneof(fc.record({ scaling: badFinite }), fc.record({ scaling: fc.constant(1), fused: fc.constantFrom<unknown>('yes', 1, null) })), (_, v) => ops.loraForward({ x: X, weight: tensor(P0.W, [O, I]), A: tensor(P0.A, [I, r]), B: tensor(P0.B, [r, O]), ...(v as object) } as never)],
  ['ops.loraForward(A of rank 0 from a tensor shape)', fc.constant(null), () => ops.loraForward({ x: X, weight: tensor(P0.W, [O, I]), A: zeros([I, 0]), B: zeros([0, O]), scaling: 1 })],
  ['ops.loraBackwardAsync(operand)', fc.constantFrom(['x', M * I], ['s', M * r], ['dy', M * O], ['weight', O * I], ['A', I * r], ['B', r * O]).chain(([k, n]) => fc.tuple(fc.constant(k), fc.oneof(notTensor, wrongDtype, wrongLength(n as number)))), (_, v) => {
    const [k, bad] = v as [string, unknown];
    return ops.loraBackwardAsync({ x: P0.x, s: new Float32Array(M * r), dy: DY.buffer(), weight: P0.W, A: P0.A, B: P0.B, scaling: 1, M, I, O, r, [k]: bad } as never);
  }],
  // Training
  ['new AdamW(options)', fc.oneof(badOptions, fc.record({ lr: fc.constantFrom<unknown>(0, -1, NaN, Infinity, '1e-3', null) }), fc.record({ betas: fc.constantFrom<unknown>([1, 0.9], [0.9], [0.9, -0.1], 'x', [NaN, 0.9]) }), fc.record({ eps: fc.constantFrom<unknown>(0, -1, NaN) }), fc.record({ weightDecay: fc.constantFrom<unknown>(-1, NaN, Infinity) })), (ctx, v) => new AdamW(ctx.layer.parameters(), v as never)],
  ['new SGD(params)', fc.oneof(notTensor, fc.constant(null).map(() => [X, X])), (_, v) => new SGD(v as never, { lr: 0.1 })],
  ['new SGD(options)', fc.oneof(badOptions, fc.constant(undefined), fc.record({ lr: fc.constantFrom<unknown>(0, -1, NaN, Infinity) }), fc.record({ lr: fc.constant(0.1), nesterov: fc.constant(true) })), (ctx, v) => new SGD(ctx.layer.parameters(), v as never)],
  ['optimizer.lr = bad', fc.constantFrom<unknown>(0, -1, NaN, Infinity, '0.1', null), (ctx, v) => { new SGD(ctx.layer.parameters(), { lr: 0.1 }).lr = v as never; }],
  ['clipGradNorm(maxNorm)', fc.constantFrom<unknown>(-1, NaN, Infinity, '1', null), (ctx, v) => clipGradNorm(ctx.layer.parameters(), v as never)],
  ['mseLoss(y, target)', fc.oneof(notTensor, wrongDtype, fc.constant(null).map(() => zeros([M, O + 1]))), (_, v) => mseLoss(DY, v as never)],
  ['crossEntropyLoss(labels)', fc.constantFrom<unknown>([0, 1, O], [0, -1, 1], [0, 1.5, 1], [0, NaN, 1], [0, 1], [0, 1, 2, 3], 'x', null, undefined, 3, new Float32Array(3), new Int32Array([0, 1, 9])), (_, v) => crossEntropyLoss(DY, v as never)],
  ['relu(x) / gelu(x)', fc.tuple(fc.boolean(), fc.oneof(notTensor, wrongDtype, badHandBuilt(3))), (_, v) => { const [g, x] = v as [boolean, unknown]; return (g ? gelu : relu)(x as never); }],
  ['ReLU/GELU.backward(dy)', fc.tuple(fc.boolean(), fc.oneof(notTensor, wrongDtype, wrongLength(M * I))), (_, v) => { const [g, dy] = v as [boolean, unknown]; const a = g ? new GELU() : new ReLU(); a.forward(X); return a.backward(dy as never); }],
  ['setNumThreads(n)', fc.oneof(badDim(1), fc.constantFrom(1025, 1e6)), (_, v) => setNumThreads(v as never)],
  // Models and files
  ['new Sequential(layers)', fc.oneof(fc.constantFrom<unknown>(null, 3, 'x'), fc.constant({ 'a.b': new ReLU() }), fc.constant([{}])), (_, v) => new Sequential(v as never)],
  ['Sequential.replace(path, layer)', fc.oneof(fc.tuple(notTensor.filter((v) => typeof v !== 'string'), fc.constant(new ReLU())), fc.tuple(fc.constant('0'), notTensor), fc.tuple(fc.constant('nope'), fc.constant(new ReLU()))), (_, v) => {
    const [path, layer] = v as [unknown, unknown];
    return new Sequential([new ReLU()]).replace(path as never, layer as never);
  }],
  ['applyLoRA(options)', fc.oneof(badOptions, fc.record({ rank: badDim(1) }), fc.record({ rank: fc.constant(2), seed: fc.constantFrom<unknown>('5', -1, 1.5) }), fc.record({ rank: fc.constant(2), targets: fc.constantFrom<unknown>('q', [1], ['nothing']) })), (_, v) => applyLoRA(new Sequential({ fc: new Linear(3, 3) }), v as never)],
  ['saveAdapter(dir, layers)', fc.tuple(fc.constantFrom<unknown>('', 3, null), fc.constant({})), (ctx, v) => saveAdapter((v as unknown[])[0] as never, { m: ctx.layer })],
  ['loadAdapter(dir, layers)', fc.oneof(fc.constantFrom<unknown>(null, [], {}, 3), fc.constant({ m: new Linear(2, 2) })), (_, v) => loadAdapter('/nonexistent-fused-lora-dir', v as never)],
];

describe(`invalid arguments are a LoraError and change nothing (fast-check, ${RUNS.invalid} runs over ${cases.length} call sites)`, () => {
  it(`each random bad call throws or rejects with a LoraError of a documented code; the layer's outputs stay bit for bit (${RUNS.invalid} runs)`, async () => {
    const layer = new LinearLoRA(new Linear(I, O, { weight: P0.W, bias: P0.bias! }), r, { A: P0.A, B: P0.B, seed: 5 });
    const y0 = layer.forward(X).dataSync();
    const dx0 = layer.backward(DY)!.dataSync();
    const gA0 = layer.lora.A.grad!.dataSync(), gB0 = layer.lora.B.grad!.dataSync();
    const params0 = [layer.base.weight.dataSync(), layer.base.bias!.dataSync(), layer.lora.A.dataSync(), layer.lora.B.dataSync()];
    const seen = new Map<string, number>();

    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: cases.length - 1 }).chain((i) => fc.tuple(fc.constant(i), cases[i][1])), async ([i, bad]) => {
        const [name, , call] = cases[i];
        layer.zeroGrad();
        let outcome: unknown = 'no error';
        try {
          await call({ layer }, bad);
        } catch (e) {
          outcome = e;
        }
        if (!(outcome instanceof LoraError) || !CODES.has(outcome.code)) {
          throw new Error(`${name} with ${describeBad(bad)}: expected a LoraError but got ${outcome instanceof Error ? `${outcome.name}: ${outcome.message}` : String(outcome)}`);
        }
        seen.set(name, (seen.get(name) ?? 0) + 1);
        // Survival: the layer computes what it computed before, bit for bit, and its state is intact.
        layer.zeroGrad();
        expect(layer.forward(X).dataSync()).toEqual(y0);
        expect(layer.backward(DY)!.dataSync()).toEqual(dx0);
        expect(layer.lora.A.grad!.dataSync()).toEqual(gA0);
        expect(layer.lora.B.grad!.dataSync()).toEqual(gB0);
        [layer.base.weight, layer.base.bias!, layer.lora.A, layer.lora.B].forEach((t, k) => expect(t.dataSync()).toEqual(params0[k]));
        expect(layer.training).toBe(true);
      }),
      { numRuns: RUNS.invalid, ...seedParam },
    );
    // Coverage: most call sites were drawn (600 runs over ~45 sites).
    expect(seen.size).toBeGreaterThan(cases.length * 0.8);
  });
});

function describeBad(v: unknown): string {
  try {
    if (typeof v === 'symbol' || typeof v === 'bigint' || typeof v === 'function') return String(v);
    if (ArrayBuffer.isView(v)) return `${v.constructor.name}(${(v as unknown as { length?: number }).length ?? v.byteLength})`;
    if (v instanceof Tensor) return String(v);
    return JSON.stringify(v) ?? String(v);
  } catch {
    return Object.prototype.toString.call(v);
  }
}
