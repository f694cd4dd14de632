// The demo (`npm run demo`, `fused-lora demo`): the seed's worked example, trained for real.
//
// A frozen Linear of W 1000 × 10000 (I = 1000 inputs, O = 10000 outputs: 10 M parameters) plays the
// pre-trained layer; a "fine-tuned teacher" is the same layer plus a hidden rank-10 update
// ΔW = Aₜ·Bₜ. A rank-10 LinearLoRA, r·(I + O) = 110,000 trainable parameters (1.1 % of W), learns the
// teacher's outputs with AdamW until the loss falls 1000× (or a step limit), then we check that the
// adapter recovered ΔW, time fused against unfused steps, save the adapter in PEFT's format, reload
// it into a fresh layer and check that it gives the same outputs.
//
// With `dtype: 'bfloat16'` the frozen layer and the activations (x, the teacher's outputs, y, dy) are
// bfloat16; with `quantize` the frozen W is held in int8 or nf4 (activations float32 unless dtype
// says bfloat16). The teacher shares that base, so the hidden update is still exactly what the
// adapter can learn, and the checks keep their meaning: fused and unfused agree to a tolerance set by
// the activations' dtype (agreementTolerance), and the reloaded adapter gives identical outputs.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SingleBar } from 'cli-progress';
import { backendInfo } from './backend-info';
import { fail } from './errors';
import { saveAdapter, loadAdapter } from './io/adapter';
import { Linear, Quantize } from './linear';
import { LinearLoRA } from './linear-lora';
import { mseLoss } from './losses';
import { AdamW } from './optim';
import { Random } from './random';
import { tensor } from './tensor';
import { median } from './stats';

export interface DemoOptions {
  inFeatures: number;
  outFeatures: number;
  rank: number;
  /** Rows of the fixed training set, and of each step's batch. */
  samples: number;
  batch: number;
  maxSteps: number;
  /** Stop when the loss is this many times below its start. */
  targetDrop: number;
  /** AdamW's initial learning rate, decayed exponentially to lr/100 at maxSteps. */
  lr: number;
  seed: number;
  /** Where the adapter goes (a temporary directory by default). */
  out?: string;
  /** The frozen layer's and the activations' dtype. */
  dtype: DemoDType;
  /** The frozen W's format when quantized (nf4 needs I a multiple of 64: I is rounded up to one). */
  quantize?: Quantize;
  progress: boolean;
  log: (line: string) => void;
}

export type DemoDType = 'float32' | 'bfloat16';
export const DEMO_DTYPES: readonly DemoDType[] = ['float32', 'bfloat16'];
export const DEMO_QUANTIZE: readonly Quantize[] = ['int8', 'nf4'];

export const DEMO_DEFAULTS: DemoOptions = {
  inFeatures: 1000, outFeatures: 10000, rank: 10, samples: 2048, batch: 128, maxSteps: 600, targetDrop: 1000,
  lr: 1e-2, seed: 7, dtype: 'float32', progress: true, log: (l) => console.log(l),
};

/**
 * How far the fused and unfused forwards may differ (‖y_unfused − y_fused‖ / ‖y_fused‖). Both compute
 * the same sums in fp32 in another order: 1e-5 where y is float32 (int8 and nf4 bases too: both GEMMs
 * multiply the same bf16-rounded x and Ŵ). A bfloat16 y is rounded to 8 significant bits by each path,
 * and two roundings of nearly equal sums land at most one bf16 ulp apart, 2^-7 of the value: 2^-7.
 */
export function agreementTolerance(dtype: DemoDType): number {
  return dtype === 'bfloat16' ? 2 ** -7 : 1e-5;
}

export interface DemoResult {
  dtype: DemoDType;
  quantize: Quantize | null;
  /** The frozen W's resident bytes (Linear.frozenBytes().weight), and what it takes in float32. */
  weightBytes: { held: number; float32: number };
  /** The bound fusedUnfusedRelErr is held to (agreementTolerance of the dtype). */
  agreementTolerance: number;
  steps: number;
  initialLoss: number;
  finalLoss: number;
  drop: number;
  updateRelErr: number;
  fusedUnfusedRelErr: number;
  reloadMaxAbsDiff: number;
  stepMs: { fused: number; unfused: number };
  adapterDir: string;
}

/** ‖got − want‖ / ‖want‖ over two arrays. */
export function relErr(got: Float32Array, want: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < got.length; i++) {
    num += (got[i] - want[i]) ** 2;
    den += want[i] ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-300));
}

/**
 * ‖s·A·B − Aₜ·Bₜ‖_F / ‖Aₜ·Bₜ‖_F without forming the I × O products: for P = [A | Aₜ] and
 * Q = [s·B ; −Bₜ], ‖P·Q‖² = tr(PᵀP · QQᵀ), built from (2r × 2r) Gram matrices. ‖Aₜ·Bₜ‖² is the
 * same trace over the two Grams' lower-right (Aₜ, Bₜ) blocks alone.
 */
export function updateRelErr(A: Float32Array, B: Float32Array, s: number, At: Float32Array, Bt: Float32Array, I: number, O: number, r: number): number {
  const k = 2 * r;
  const gram = (n: number, get: (row: number, col: number) => number) => {
    const g = new Float64Array(k * k);
    for (let t = 0; t < n; t++)
      for (let a = 0; a < k; a++) {
        const va = get(t, a);
        if (va === 0) continue;
        for (let b = 0; b < k; b++) g[a * k + b] += va * get(t, b);
      }
    return g;
  };
  const P = gram(I, (i, c) => (c < r ? A[i * r + c] : At[i * r + c - r]));                // PᵀP
  const Q = gram(O, (o, c) => (c < r ? s * B[c * O + o] : -Bt[(c - r) * O + o]));        // Q·Qᵀ
  let all = 0, teacher = 0;  // tr(X·Y) = Σ X∘Y for symmetric X, Y
  for (let a = 0; a < k; a++)
    for (let b = 0; b < k; b++) {
      const v = P[a * k + b] * Q[a * k + b];
      all += v;
      if (a >= r && b >= r) teacher += v;
    }
  return Math.sqrt(Math.max(all, 0) / teacher);
}

/**
 * The demos' training loop: `step(t)` runs step t (from 1) and returns its loss. The full-set loss is
 * what must drop; a running mean over one pass of `batches` batches estimates it, and the loop stops
 * once it is `targetDrop` below the first step's loss, or at `maxSteps`. A progress bar when asked.
 */
export function trainUntil(o: { maxSteps: number; targetDrop: number; progress: boolean }, batches: number, step: (t: number) => number):
    { steps: number; initialLoss: number; loss: number; seconds: number } {
  const bar = o.progress ? new SingleBar({ format: 'training [{bar}] {value}/{total} steps | loss {loss} | {rate} steps/s', hideCursor: true }) : null;
  bar?.start(o.maxSteps, 0, { loss: '-', rate: '-' });
  const started = performance.now();
  const rate = (t: number) => (t / ((performance.now() - started) / 1000)).toFixed(1);
  let initialLoss = NaN, loss = NaN, steps = 0;
  const window: number[] = [];
  for (steps = 1; steps <= o.maxSteps; steps++) {
    const l = step(steps);
    if (steps === 1) initialLoss = l;
    window.push(l);
    if (window.length > batches) window.shift();
    loss = window.reduce((a, v) => a + v, 0) / window.length;
    if (steps % 10 === 0) bar?.update(steps, { loss: loss.toExponential(2), rate: rate(steps) });
    if (window.length === batches && loss <= initialLoss / o.targetDrop) break;
  }
  steps = Math.min(steps, o.maxSteps);
  bar?.update(steps, { loss: loss.toExponential(2), rate: rate(steps) });
  bar?.stop();
  return { steps, initialLoss, loss, seconds: (performance.now() - started) / 1000 };
}

export async function runDemo(options: Partial<DemoOptions> = {}): Promise<DemoResult> {
  const o = { ...DEMO_DEFAULTS, ...options };
  if (!DEMO_DTYPES.includes(o.dtype)) fail('ERR_ARGUMENT', 'demo', 'options.dtype', DEMO_DTYPES.map((d) => `'${d}'`).join(' or '), o.dtype);
  if (o.quantize !== undefined && !DEMO_QUANTIZE.includes(o.quantize)) fail('ERR_ARGUMENT', 'demo', 'options.quantize', "'int8' or 'nf4'", o.quantize);
  const { outFeatures: O, rank: r, dtype, log } = o;
  const quantize = o.quantize ?? null;
  const I = quantize === 'nf4' ? Math.ceil(o.inFeatures / 64) * 64 : o.inFeatures;
  const info = backendInfo().cpu;
  log(`fused-lora demo on ${info.blas}${info.blasPath ? ` (${info.blasPath})` : ''}, ${info.threads} threads: ${info.reason}`);
  if (I !== o.inFeatures) log(`nf4 quantizes W in blocks of 64 along I: I = ${I} instead of ${o.inFeatures}`);

  // The pre-trained layer, and the teacher: the same layer plus a hidden rank-r update.
  const rng = new Random(o.seed);
  const base = new Linear(I, O, { seed: o.seed, bias: true, dtype, ...(quantize ? { quantize } : {}) });
  const At = rng.fillUniform(new Float32Array(I * r), 1 / Math.sqrt(I));
  const Bt = rng.fillUniform(new Float32Array(r * O), 0.5);
  const teacher = new LinearLoRA(base, r, { A: At, B: Bt, alpha: r });  // scaling 1: ΔW = Aₜ·Bₜ
  teacher.eval();

  const layer = new LinearLoRA(base, r, { alpha: r, seed: o.seed + 1 });
  const frozen = layer.numFrozen(), trainable = layer.numTrainable();
  log(`layer: W ${O} x ${I} + bias = ${frozen.toLocaleString('en-US')} frozen parameters, rank ${r}: ` +
      `${trainable.toLocaleString('en-US')} trainable (${((100 * trainable) / (O * I)).toFixed(2)} % of W)`);
  const weightBytes = { held: base.frozenBytes().weight, float32: 4 * O * I };
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  log(`base: W in ${quantize ?? dtype}${quantize ? ` (quantized from float32), activations ${dtype}` : ''}: ` +
      `${mib(weightBytes.held)} resident, ${(weightBytes.held / weightBytes.float32).toFixed(3)}x of float32's ${mib(weightBytes.float32)}; A, B and AdamW float32`);

  // A fixed training set: inputs and the teacher's outputs, in the activations' dtype, cut into batches.
  const xAll = tensor(rng.fillUniform(new Float32Array(o.samples * I), 1), [o.samples, I], { dtype });
  const xHost = xAll.dataSync(), targetHost = teacher.forward(xAll).dataSync();  // values exact in dtype
  const batches = Math.floor(o.samples / o.batch);
  const cut = (host: Float32Array, features: number) => Array.from({ length: batches }, (_, b) =>
    tensor(host.subarray(b * o.batch * features, (b + 1) * o.batch * features), [o.batch, features], { dtype }));
  const xs = cut(xHost, I), targets = cut(targetHost, O);

  const opt = new AdamW(layer.parameters(), { lr: o.lr, weightDecay: 0 });
  const { steps, initialLoss, loss, seconds } = trainUntil(o, batches, (step) => {
    // Exponential decay: a constant rate leaves Adam hovering above the exact solution, which
    // exists here (the teacher is realisable), so the loss can keep falling as the rate does.
    opt.lr = o.lr * 0.01 ** ((step - 1) / o.maxSteps);
    const b = (step - 1) % batches;
    const y = layer.forward(xs[b]);
    const { loss: l, grad } = mseLoss(y, targets[b]);
    layer.backward(grad, { inputGrad: false });
    opt.step();
    opt.zeroGrad();
    return l;
  });
  const drop = initialLoss / loss;
  log(`trained ${steps} steps in ${seconds.toFixed(1)} s: loss ${initialLoss.toExponential(3)} -> ${loss.toExponential(3)} (${drop.toFixed(0)}x lower)`);

  const updErr = updateRelErr(layer.lora.A.dataSync(), layer.lora.B.dataSync(), layer.scaling, At, Bt, I, O, r);
  log(`recovered update: ||scaling*A*B - dW|| / ||dW|| = ${updErr.toExponential(2)}`);

  // Fused against unfused: the same step, side by side.
  const unfused = new LinearLoRA(base, r, { alpha: r, A: layer.lora.A.dataSync(), B: layer.lora.B.dataSync(), fused: false });
  const xb = xs[0], dy = mseLoss(layer.forward(xb), targets[0]).grad;
  const agree = relErr(unfused.forward(xb).dataSync(), layer.forward(xb).dataSync());
  const time = (l: LinearLoRA) => {
    const t: number[] = [];
    for (let i = 0; i < 7; i++) {
      const s = performance.now();
      l.forward(xb);
      l.backward(dy);
      t.push(performance.now() - s);
    }
    return median(t.slice(2));
  };
  const stepMs = { fused: 0, unfused: 0 };
  for (let round = 0; round < 2; round++) {  // alternate, so drift on a shared machine hits both alike
    stepMs.fused = time(layer);
    stepMs.unfused = time(unfused);
  }
  layer.zeroGrad();
  const tolerance = agreementTolerance(dtype);
  log(`step (forward + backward, M = ${o.batch}): fused ${stepMs.fused.toFixed(1)} ms, unfused ${stepMs.unfused.toFixed(1)} ms ` +
      `(unfused/fused ${(stepMs.unfused / stepMs.fused).toFixed(2)}); outputs agree to ${agree.toExponential(1)} ` +
      `(bound ${tolerance.toExponential(1)}: ${dtype === 'bfloat16' ? 'one bf16 ulp, 2^-7, as each path rounds y to bf16' : 'fp32 sums in another order'})`);

  // Save in PEFT's format, reload into a fresh layer, compare outputs.
  const dir = o.out ?? fs.mkdtempSync(path.join(os.tmpdir(), 'fused-lora-demo-'));
  await saveAdapter(dir, { 'demo.proj': layer }, { baseModel: `fused-lora/demo-${I}x${O}${quantize ? `-${quantize}` : dtype === 'float32' ? '' : `-${dtype}`}` });
  const fresh = new LinearLoRA(base, r, { seed: 12345 });
  await loadAdapter(dir, { 'demo.proj': fresh });
  fresh.eval();
  layer.eval();
  const a = layer.forward(xb).dataSync(), bOut = fresh.forward(xb).dataSync();
  let maxDiff = 0;
  for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i] - bOut[i]));
  log(`adapter saved to ${dir} (${fs.readdirSync(dir).sort().join(', ')}); reloaded layer's outputs differ by at most ${maxDiff}`);
  return {
    dtype, quantize, weightBytes, agreementTolerance: tolerance,
    steps, initialLoss, finalLoss: loss, drop, updateRelErr: updErr, fusedUnfusedRelErr: agree, reloadMaxAbsDiff: maxDiff, stepMs, adapterDir: dir,
  };
}
