// The many-adapter demo (`fused-lora demo --adapters K`): K hidden teachers, each the same frozen
// layer plus its own rank-r update ΔWₖ = Aₜₖ·Bₜₖ, trained at once in one MultiLoRALinear batch that
// holds rows of every adapter in each step. Then each adapter's recovered update is checked, a step
// is timed against the same K adapters trained one by one (K LinearLoRAs in turn on the same rows),
// side by side, with the outputs and gradients of both compared, and every adapter is saved as its
// own PEFT directory and reloaded into a fresh layer of many. The base may be bfloat16 (W and the
// activations) or hold W quantized, as the single demo's: both sides share it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { backendInfo } from './backend-info';
import { agreementTolerance, DEMO_DEFAULTS, DEMO_DTYPES, DEMO_QUANTIZE, DemoDType, DemoOptions, relErr, trainUntil, updateRelErr } from './demo';
import type { Quantize } from './linear';
import { fail } from './errors';
import { saveAdapter, loadAdapter } from './io/adapter';
import { Linear } from './linear';
import { LinearLoRA } from './linear-lora';
import { mseLoss } from './losses';
import { AdapterOptions, MultiLoRALinear } from './multi-lora-linear';
import { AdamW } from './optim';
import { Random } from './random';
import { Tensor, tensor } from './tensor';
import { median } from './stats';
import { checkOptions, optionKeys } from './validate';

/** The most adapters the demo trains at once (each needs its own teacher, optimizer and directory). */
export const MAX_DEMO_ADAPTERS = 64;

/** The single demo's options but its batch. */
export interface MultiDemoOptions extends Omit<DemoOptions, 'batch'> {
  /** K, the adapters trained together. */
  adapters: number;
  /** Rows of each adapter in each step: a step's batch is adapters · rowsPerAdapter rows. */
  rowsPerAdapter: number;
}

const MULTI_DEMO_KEYS = optionKeys<MultiDemoOptions>({
  inFeatures: true, outFeatures: true, rank: true, samples: true, maxSteps: true, targetDrop: true, lr: true, seed: true,
  out: true, progress: true, log: true, adapters: true, rowsPerAdapter: true, dtype: true, quantize: true,
});

export const MULTI_DEMO_DEFAULTS: MultiDemoOptions = (({ batch: _, ...rest }) => ({ ...rest, adapters: 8, rowsPerAdapter: 16 }))(DEMO_DEFAULTS);

export interface MultiDemoAdapterResult {
  name: string;
  /** ‖scaling·A·B − ΔWₖ‖ / ‖ΔWₖ‖ of this adapter against its own teacher. */
  updateRelErr: number;
  /** The same against the other teachers' updates, at best: an adapter must find its own. */
  nearestOtherRelErr: number;
}

export interface MultiDemoResult {
  dtype: DemoDType;
  quantize: Quantize | null;
  steps: number;
  initialLoss: number;
  finalLoss: number;
  drop: number;
  adapters: MultiDemoAdapterResult[];
  /** One batch against the K LinearLoRAs on the same rows: the largest relative error of y, dx, dA and dB. */
  oneByOneRelErr: { y: number; dx: number; dA: number; dB: number };
  /** The bound oneByOneRelErr is held to: 1e-5, or 2^-7 (one bf16 ulp) where y and dx are bfloat16. */
  agreementTolerance: number;
  /** Milliseconds per training step (forward + backward with dx) of all K adapters. */
  stepMs: { oneBatch: number; oneByOne: number };
  speedup: number;
  reloadMaxAbsDiff: number;
  adapterDir: string;
}

function checkMultiDemo(options: Partial<MultiDemoOptions>): MultiDemoOptions {
  const where = 'runMultiDemo';
  const o = { ...MULTI_DEMO_DEFAULTS, ...checkOptions(where, options, MULTI_DEMO_KEYS) };
  if (!Number.isInteger(o.adapters) || o.adapters < 1 || o.adapters > MAX_DEMO_ADAPTERS) {
    fail('ERR_ARGUMENT', where, 'options.adapters', `an integer from 1 to ${MAX_DEMO_ADAPTERS}`, o.adapters);
  }
  if (!Number.isInteger(o.rowsPerAdapter) || o.rowsPerAdapter < 1) fail('ERR_ARGUMENT', where, 'options.rowsPerAdapter', 'a positive integer', o.rowsPerAdapter);
  if (!DEMO_DTYPES.includes(o.dtype)) fail('ERR_ARGUMENT', where, 'options.dtype', DEMO_DTYPES.map((d) => `'${d}'`).join(' or '), o.dtype);
  if (o.quantize !== undefined && !DEMO_QUANTIZE.includes(o.quantize)) fail('ERR_ARGUMENT', where, 'options.quantize', "'int8' or 'nf4'", o.quantize);
  const M = o.adapters * o.rowsPerAdapter;
  if (!Number.isInteger(o.samples) || o.samples < M) {
    fail('ERR_ARGUMENT', where, 'options.samples', `an integer of at least adapters · rowsPerAdapter = ${M} (one step's rows)`, o.samples);
  }
  return o;
}

export async function runMultiDemo(options: Partial<MultiDemoOptions> = {}): Promise<MultiDemoResult> {
  const o = checkMultiDemo(options);
  const { outFeatures: O, rank: r, adapters: K, rowsPerAdapter: m, dtype, log } = o;
  const quantize = o.quantize ?? null;
  const I = quantize === 'nf4' ? Math.ceil(o.inFeatures / 64) * 64 : o.inFeatures;
  const M = K * m;
  const info = backendInfo().cpu;
  log(`fused-lora demo, ${K} adapters on one base, on ${info.blas}${info.blasPath ? ` (${info.blasPath})` : ''}, ${info.threads} threads: ${info.reason}`);
  if (I !== o.inFeatures) log(`nf4 quantizes W in blocks of 64 along I: I = ${I} instead of ${o.inFeatures}`);

  // The pre-trained layer, and K teachers: the same layer plus a hidden rank-r update each.
  const rng = new Random(o.seed);
  const base = new Linear(I, O, { seed: o.seed, bias: true, dtype, ...(quantize ? { quantize } : {}) });
  const names = Array.from({ length: K }, (_, k) => `task${k}`);
  const At = names.map(() => rng.fillUniform(new Float32Array(I * r), 1 / Math.sqrt(I)));
  const Bt = names.map(() => rng.fillUniform(new Float32Array(r * O), 0.5));
  const teacher = new MultiLoRALinear(base, {
    adapters: Object.fromEntries(names.map((n, k) => [n, { rank: r, alpha: r, A: At[k], B: Bt[k] }])),  // scaling 1: ΔWₖ = Aₜₖ·Bₜₖ
  });
  teacher.eval();
  const specs = (seed: number): Record<string, AdapterOptions> => Object.fromEntries(names.map((n, k) => [n, { rank: r, alpha: r, seed: seed + k }]));
  const layer = new MultiLoRALinear(base, { adapters: specs(o.seed + 1) });
  const trainable = layer.numTrainable();
  log(`layer: W ${O} x ${I} + bias = ${layer.numFrozen().toLocaleString('en-US')} frozen parameters, ${K} adapters of rank ${r}: ` +
      `${trainable.toLocaleString('en-US')} trainable (${((100 * trainable) / (O * I)).toFixed(2)} % of W), ${m} rows of each in every step (M = ${M})`);
  if (quantize || dtype !== 'float32') {
    const held = base.frozenBytes().weight;
    log(`base: W in ${quantize ?? dtype}${quantize ? ` (quantized from float32), activations ${dtype}` : ''}: ` +
        `${(held / 2 ** 20).toFixed(1)} MiB resident, ${(held / (4 * O * I)).toFixed(3)}x of float32's; A, B and AdamW float32`);
  }
  // Host rows as tensors of the activations' dtype (their values are exact in it: placing them rounds nothing).
  const placed = (host: Float32Array, shape: number[]) => (dtype === 'float32' ? new Tensor(host, shape) : tensor(host, shape, { dtype }));

  // One pool of inputs; step t takes its next M rows, chunk j of them for adapter (j + pass) mod K, so
  // over K passes every adapter sees every row, and each step holds rows of all K adapters.
  const x = tensor(rng.fillUniform(new Float32Array(o.samples * I), 1), [o.samples, I], { dtype }).dataSync();
  const batches = Math.floor(o.samples / M);
  const xBatches = Array.from({ length: batches }, (_, b) => placed(x.subarray(b * M * I, (b + 1) * M * I), [M, I]));
  const rowsOf = (b: number) => xBatches[b];
  const namesOf = (pass: number) => Array.from({ length: M }, (_, i) => names[(Math.floor(i / m) + pass) % K]);
  const schedule = Array.from({ length: K }, (_, pass) => namesOf(pass));

  const opts = names.map((n) => new AdamW(layer.adapter(n).parameters(), { lr: o.lr, weightDecay: 0 }));
  const { steps, initialLoss, loss, seconds } = trainUntil(o, batches, (step) => {
    for (const opt of opts) opt.lr = o.lr * 0.01 ** ((step - 1) / o.maxSteps);  // as the single demo decays it
    const b = (step - 1) % batches, adapterNames = schedule[Math.floor((step - 1) / batches) % K];
    const xb = rowsOf(b);
    const { loss: l, grad } = mseLoss(layer.forward(xb, { adapterNames }), teacher.forward(xb, { adapterNames }));
    layer.backward(grad, { inputGrad: false });
    for (const opt of opts) { opt.step(); opt.zeroGrad(); }
    return l;
  });
  const drop = initialLoss / loss;
  log(`trained ${K} adapters together, ${steps} steps in ${seconds.toFixed(1)} s: loss ${initialLoss.toExponential(3)} -> ${loss.toExponential(3)} (${drop.toFixed(0)}x lower)`);

  const trained = names.map((n) => ({ A: layer.adapter(n).A.dataSync(), B: layer.adapter(n).B.dataSync(), s: layer.adapter(n).scaling }));
  const adapters = names.map((name, k) => {
    const { A, B, s } = trained[k];
    const others = names.map((_, j) => j).filter((j) => j !== k).map((j) => updateRelErr(A, B, s, At[j], Bt[j], I, O, r));
    return { name, updateRelErr: updateRelErr(A, B, s, At[k], Bt[k], I, O, r), nearestOtherRelErr: others.length ? Math.min(...others) : NaN };
  });
  for (const a of adapters) {
    log(`  ${a.name}: ||scaling*A*B - dW|| / ||dW|| = ${a.updateRelErr.toExponential(2)}` +
        (K > 1 ? ` (against the nearest other teacher's dW: ${a.nearestOtherRelErr.toFixed(2)})` : ''));
  }

  // One batch against one by one: the same K adapters as K LinearLoRAs, each stepped on its own rows.
  const single = names.map((_, k) => new LinearLoRA(base, r, { alpha: r, A: trained[k].A, B: trained[k].B }));
  const xb = rowsOf(0), adapterNames = schedule[0];   // grouped: chunk k is adapter k's
  const chunk = (t: Tensor, width: number, k: number) => placed(t.dataSync().subarray(k * m * width, (k + 1) * m * width), [m, width]);
  const dy = mseLoss(layer.forward(xb, { adapterNames }), teacher.forward(xb, { adapterNames })).grad;
  const dx = layer.backward(dy)!;
  const worst = { y: 0, dx: 0, dA: 0, dB: 0 };
  const y = layer.forward(xb, { adapterNames }).dataSync();
  layer.zeroGrad();
  layer.backward(dy);
  single.forEach((l, k) => {
    const yk = l.forward(chunk(xb, I, k)).dataSync(), dxk = l.backward(chunk(dy, O, k))!.dataSync();
    const mine = layer.adapter(names[k]);
    worst.y = Math.max(worst.y, relErr(y.subarray(k * m * O, (k + 1) * m * O), yk));
    worst.dx = Math.max(worst.dx, relErr(dx.dataSync().subarray(k * m * I, (k + 1) * m * I), dxk));
    worst.dA = Math.max(worst.dA, relErr(mine.A.grad!.dataSync(), l.lora.A.grad!.dataSync()));
    worst.dB = Math.max(worst.dB, relErr(mine.B.grad!.dataSync(), l.lora.B.grad!.dataSync()));
  });
  const oneBatch = () => { layer.forward(xb, { adapterNames }); layer.backward(dy); };
  const xs = names.map((_, k) => chunk(xb, I, k)), dys = names.map((_, k) => chunk(dy, O, k));
  const oneByOne = () => single.forEach((l, k) => { l.forward(xs[k]); l.backward(dys[k]); });
  const time = (step: () => void) => {
    const t: number[] = [];
    for (let i = 0; i < 7; i++) {
      const s = performance.now();
      step();
      t.push(performance.now() - s);
    }
    return median(t.slice(2));
  };
  const stepMs = { oneBatch: 0, oneByOne: 0 };
  for (let round = 0; round < 2; round++) {  // alternate, so drift on a shared machine hits both alike
    stepMs.oneBatch = time(oneBatch);
    stepMs.oneByOne = time(oneByOne);
  }
  layer.zeroGrad();
  single.forEach((l) => l.dispose());
  const speedup = stepMs.oneByOne / stepMs.oneBatch;
  const tolerance = agreementTolerance(dtype);
  log(`step of all ${K} adapters (forward + backward, ${m} rows each): one batch ${stepMs.oneBatch.toFixed(1)} ms, ` +
      `one by one ${stepMs.oneByOne.toFixed(1)} ms (${speedup.toFixed(2)}x); y, dx, dA, dB agree to ` +
      `${Math.max(worst.y, worst.dx, worst.dA, worst.dB).toExponential(1)} (bound ${tolerance.toExponential(1)})`);

  // Each adapter its own PEFT directory, reloaded into a fresh layer of many; the outputs must match.
  const dir = o.out ?? fs.mkdtempSync(path.join(os.tmpdir(), 'fused-lora-demo-multi-'));
  const fresh = new MultiLoRALinear(base, { adapters: specs(12345) });
  for (const n of names) {
    await saveAdapter(path.join(dir, n), { 'demo.proj': layer }, { adapter: n, baseModel: `fused-lora/demo-${I}x${O}${quantize ? `-${quantize}` : dtype === 'float32' ? '' : `-${dtype}`}` });
    await loadAdapter(path.join(dir, n), { 'demo.proj': fresh }, { adapter: n });
  }
  fresh.eval();
  layer.eval();
  const a = layer.forward(xb, { adapterNames }).dataSync(), bOut = fresh.forward(xb, { adapterNames }).dataSync();
  let maxDiff = 0;
  for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i] - bOut[i]));
  fresh.dispose();
  log(`${K} adapters saved to ${dir}/{${names.length > 3 ? `${names[0]},...,${names[K - 1]}` : names.join(',')}}; reloaded, the outputs differ by at most ${maxDiff}`);
  return {
    dtype, quantize, steps, initialLoss, finalLoss: loss, drop, adapters, oneByOneRelErr: worst, agreementTolerance: tolerance, stepMs, speedup,
    reloadMaxAbsDiff: maxDiff, adapterDir: dir,
  };
}
