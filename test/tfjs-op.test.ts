// loraLinear, the fused op, on tfjs's cpu and wasm backends: its value and its gradients (tf.grads
// in x, A and B) equal tfjs's own composition, x·kernel + bias + scaling·(x·A)·B, computed on the
// cpu backend, within 1e-5 (relative, Frobenius), over awkward sizes, real widths with few rows,
// and inputs of rank 3 and 4; with activation 'relu', tf.relu over it. The kernel and the bias are
// frozen: their gradients are zeros.
import { describe, expect, it } from 'vitest';
import { loraLinear } from '../lib/tfjs/index';
import { ops, tensor } from '../lib/index';
import { relErr, shapeSweep } from './reference';
import { BACKENDS, Case, checkKernelLeaks, composition, fused, makeCase, Outcome, outcome, poisonHeap, tf, use } from './tfjs-setup';

const TOL = 1e-5;
checkKernelLeaks();

// The reference of each case, computed once for both backends (tfjs's cpu matMul is the slow part).
const references = new Map<Case, Outcome>();
const cases = new Map<string, Case>();
const caseOf = (lead: number[], I: number, O: number, r: number, seed: number, bias = true): Case => {
  const key = `${lead}/${I}/${O}/${r}/${seed}/${bias}`;
  if (!cases.has(key)) cases.set(key, makeCase(lead, I, O, r, seed, bias));
  return cases.get(key)!;
};

/** The reference on the cpu backend, then the fused op on `backend`, every output compared. */
async function compare(backend: (typeof BACKENDS)[number], c: Case): Promise<void> {
  await use('cpu');
  if (!references.has(c)) references.set(c, outcome(c, composition));
  const want = references.get(c)!;
  await use(backend);
  poisonHeap(want.dx.length + want.y.length + c.A.length + c.B.length);
  const got = outcome(c, fused);
  for (const k of ['y', 'dx', 'dA', 'dB'] as Array<keyof Outcome>) {
    expect(got[k].some(Number.isNaN), `${k} has NaN`).toBe(false);
    expect(relErr(got[k], want[k]), `${k} on ${backend}`).toBeLessThan(TOL);
  }
}

// Every third shape of the covering sweep (each size of it appears as M, I and O across the list),
// rows past the M <= 8 route, and real widths with the few rows of decoding and small batches.
const AWKWARD = shapeSweep().filter((_, i) => i % 3 === 0);
const WIDE: Array<[number, number, number, number]> = [[3, 768, 3072, 8], [1, 4096, 4096, 16], [2, 4096, 11008, 16], [2, 11008, 4096, 4], [1, 1000, 10000, 10]];

describe.each(BACKENDS)('loraLinear on %s equals the composition on cpu', (backend) => {
  it.each([...AWKWARD, ...WIDE])('M=%i I=%i O=%i r=%i: y, dx, dA, dB', async (M, I, O, r) => {
    await compare(backend, caseOf([M], I, O, r, M + 7 * I + 13 * O + r, (M + I) % 2 === 0));
  });

  it.each([[[2, 3], 17, 9, 4], [[3, 1, 5], 33, 65, 2], [[1, 1], 64, 1, 1]] as Array<[number[], number, number, number]>)(
    'x of shape [%s, I] (I=%i, O=%i, r=%i): the leading dimensions are rows, y and dx keep them', async (lead, I, O, r) => {
      await compare(backend, caseOf(lead, I, O, r, 99 + I));
    });

  // The ReLU inside the op: y = relu(...) and its gradient (dy where y > 0) against tf.relu over the composition.
  const reluOf = (compute: typeof composition): typeof composition => (x, kernel, bias, A, B, scaling) => tf.relu(compute(x, kernel, bias, A, B, scaling));
  const fusedRelu: typeof composition = (x, kernel, bias, A, B, scaling) => loraLinear(x, kernel, bias, A, B, { scaling, activation: 'relu' });
  it.each([[5, 17, 9, 3, true], [65, 64, 129, 4, false], [3, 768, 3072, 8, true], [1, 4096, 4096, 16, true], [2, 11008, 4096, 4, false]] as Array<[number, number, number, number, boolean]>)(
    "activation 'relu', M=%i I=%i O=%i r=%i (bias %s): y, dx, dA, dB equal tf.relu over the composition", async (M, I, O, r, bias) => {
      const c = caseOf([M], I, O, r, 3 * M + I + O, bias);
      await use('cpu');
      const want = outcome(c, reluOf(composition));
      await use(backend);
      poisonHeap(want.dx.length + 2 * want.y.length + c.A.length + c.B.length);
      const got = outcome(c, fusedRelu);
      // Both signs occur: the mask is exercised, not the identity or zero.
      expect(got.y.some((v) => v === 0) && got.y.some((v) => v > 0)).toBe(true);
      for (const k of ['y', 'dx', 'dA', 'dB'] as Array<keyof Outcome>) {
        expect(got[k].some(Number.isNaN), `${k} has NaN`).toBe(false);
        expect(relErr(got[k], want[k]), `${k} on ${backend}`).toBeLessThan(TOL);
      }
    });

  /**
   * tfjs's own composition with dropout on the LoRA path, on the cpu backend: x ⊙ mask / (1 − p) with
   * the mask ops.loraForward draws for (seed, step) (the kernels' one generator), then the ReLU or not.
   */
  async function droppedReference(c: ReturnType<typeof makeCase>, p: number, seed: number, step: number, relu: boolean): Promise<Outcome> {
    const { I, O, r } = c, M = c.x.length / I;
    const { mask } = ops.loraForward({
      x: tensor(c.x, [M, I]), weight: tensor(c.kernel, [I, O]), A: tensor(c.A, [I, r]), B: tensor(c.B, [r, O]), scaling: 1, fanInFanOut: true, dropout: { p, seed, step },
    });
    await use('cpu');
    const keep = tf.tensor(Float32Array.from(mask!, (m) => m / (1 - p)), c.xShape);
    const want = outcome(c, (x, kernel, bias, A, B, scaling) => {
      const [I, O] = kernel.shape;
      const lora = tf.matMul(tf.matMul(tf.reshape(tf.mul(x, keep), [-1, I]), A), B);
      const y = tf.reshape(tf.add(tf.add(tf.matMul(tf.reshape(x, [-1, I]), kernel), tf.mul(lora, scaling)), bias!), [...x.shape.slice(0, -1), O]);
      return relu ? tf.relu(y) : y;
    });
    keep.dispose();
    return want;
  }

  it("activation 'relu' with dropout and x of rank 3: the ReLU after the sum, the mask on the LoRA path", async () => {
    const c = makeCase([4, 3], 20, 11, 3, 15);
    const p = 0.3, seed = 4, step = 2;
    const want = await droppedReference(c, p, seed, step, true);
    await use(backend);
    const got = outcome(c, (x, kernel, bias, A, B, scaling) => loraLinear(x, kernel, bias, A, B, { scaling, dropout: p, seed, step, activation: 'relu' }));
    expect(got.y.some((v) => v === 0) && got.y.some((v) => v > 0)).toBe(true);
    for (const k of ['y', 'dx', 'dA', 'dB'] as Array<keyof Outcome>) expect(relErr(got[k], want[k]), k).toBeLessThan(TOL);
  });

  it('an empty batch (0 rows): y and dx are empty, dA and dB zero', async () => {
    await use(backend);
    const c = makeCase([0], 5, 3, 2, 1);
    const got = outcome(c, fused);
    expect(got.y.length).toBe(0);
    expect(got.dx.length).toBe(0);
    expect([...got.dA, ...got.dB].every((v) => v === 0)).toBe(true);
  });

  it('with dropout: the LoRA path sees x ⊙ mask / (1 − p), the mask of (seed, step); training is reproducible', async () => {
    const c = makeCase([4, 3], 20, 11, 3, 5);
    const p = 0.3, seed = 42, step = 7;
    const want = await droppedReference(c, p, seed, step, false);
    await use(backend);
    const got = outcome(c, (x, kernel, bias, A, B, scaling) => loraLinear(x, kernel, bias, A, B, { scaling, dropout: p, seed, step }));
    for (const k of ['y', 'dx', 'dA', 'dB'] as Array<keyof Outcome>) expect(relErr(got[k], want[k]), k).toBeLessThan(TOL);
    const other = outcome(c, (x, kernel, bias, A, B, scaling) => loraLinear(x, kernel, bias, A, B, { scaling, dropout: p, seed, step: step + 1 }));
    expect(relErr(other.y, got.y)).toBeGreaterThan(1e-3);
  });

  it('what backward needs rides with each call: two calls on one tape give the sum of their gradients', async () => {
    await use(backend);
    const c1 = makeCase([3], 12, 7, 2, 3), c2 = makeCase([5], 12, 7, 2, 4);
    const [A, B] = [tf.tensor(c1.A, [12, 2]), tf.tensor(c1.B, [2, 7])];
    const kernel = tf.tensor(c1.kernel, [12, 7]);
    const x1 = tf.tensor(c1.x, [3, 12]), x2 = tf.tensor(c2.x, [5, 12]);
    const loss = (x: tf.Tensor) => (Av: tf.Tensor, Bv: tf.Tensor) => tf.sum(tf.square(loraLinear(x, kernel, null, Av, Bv, { scaling: 2 })));
    const both = tf.grads((Av: tf.Tensor, Bv: tf.Tensor) => tf.add(loss(x1)(Av, Bv), loss(x2)(Av, Bv)))([A, B]);
    const one = tf.grads(loss(x1))([A, B]), two = tf.grads(loss(x2))([A, B]);
    for (let i = 0; i < 2; i++) expect(relErr(both[i].dataSync(), tf.add(one[i], two[i]).dataSync())).toBeLessThan(1e-6);
    tf.dispose([A, B, kernel, x1, x2, ...both, ...one, ...two]);
  });

  it('the kernel and the bias are frozen: their gradients are zeros, and an optimizer given them leaves them bit-identical', async () => {
    await use(backend);
    const c = makeCase([6], 10, 4, 2, 8);
    const kernel = tf.variable(tf.tensor(c.kernel, [10, 4])), bias = tf.variable(tf.tensor(c.bias!, [4]));
    const A = tf.variable(tf.tensor(c.A, [10, 2])), B = tf.variable(tf.tensor(c.B, [2, 4]));
    const x = tf.tensor(c.x, [6, 10]);
    const f = () => tf.sum(tf.square(loraLinear(x, kernel, bias, A, B, { scaling: 1 }))) as tf.Scalar;
    const { grads } = tf.variableGrads(f, [kernel, bias, A]);
    expect(grads[kernel.name].dataSync().every((v) => v === 0)).toBe(true);
    expect(grads[bias.name].dataSync().every((v) => v === 0)).toBe(true);
    expect(grads[A.name].dataSync().some((v) => v !== 0)).toBe(true);
    const opt = tf.train.adam(0.1);
    for (let i = 0; i < 3; i++) opt.minimize(f, false, [kernel, bias, A, B]);
    expect(Buffer.from(kernel.dataSync().buffer).equals(Buffer.from(c.kernel.buffer))).toBe(true);
    expect(Buffer.from(bias.dataSync().buffer).equals(Buffer.from(c.bias!.buffer))).toBe(true);
    expect(relErr(A.dataSync(), c.A)).toBeGreaterThan(1e-3);
    opt.dispose();
    tf.dispose([kernel, bias, A, B, x, ...Object.values(grads)]);
  });

  it('leaves no tensor behind: forward, gradients, and a gradient of A alone (dB computed and dropped)', async () => {
    await use(backend);
    const c = makeCase([4], 9, 5, 3, 2);
    const [x, kernel, A, B] = [tf.tensor(c.x, [4, 9]), tf.tensor(c.kernel, [9, 5]), tf.tensor(c.A, [9, 3]), tf.tensor(c.B, [3, 5])];
    const before = tf.memory();
    for (let i = 0; i < 3; i++) {
      tf.dispose(tf.tidy(() => loraLinear(x, kernel, null, A, B, { scaling: 1, dropout: 0.2, seed: 1, step: i })));
      tf.dispose(tf.grads((xv: tf.Tensor, Av: tf.Tensor, Bv: tf.Tensor) => tf.sum(loraLinear(xv, kernel, null, Av, Bv, { scaling: 1, dropout: 0.2, seed: 1, step: i })))([x, A, B]));
      tf.dispose(tf.grads((Av: tf.Tensor) => tf.sum(loraLinear(x, kernel, null, Av, B, { scaling: 1 })))([A]));
      tf.dispose(tf.grads((Bv: tf.Tensor) => tf.sum(loraLinear(x, kernel, null, A, Bv, { scaling: 1 })))([B]));
      tf.dispose(tf.grads((xv: tf.Tensor, Av: tf.Tensor) => tf.sum(loraLinear(xv, kernel, null, Av, B, { scaling: 1, activation: 'relu' })))([x, A]));
    }
    const after = tf.memory();
    expect(after.numTensors).toBe(before.numTensors);
    expect(after.numDataBuffers).toBe(before.numDataBuffers);
    expect(after.numBytes).toBe(before.numBytes);
    tf.dispose([x, kernel, A, B]);
  });
});
