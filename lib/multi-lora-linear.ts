// MultiLoRALinear: one frozen Linear and many named LoRA adapters, each row of a batch naming its
// adapter (PEFT's adapter_names; '__base__' for the frozen layer alone):
// y[m] = x[m]·Wᵀ + b + scaling_i·(x̃[m]·A_i)·B_i for the adapter i of row m.
//
// The point is the batch: rows of every adapter share one frozen GEMM per direction, at the batch's
// M, where each adapter trained alone would read all of W for its few rows. Each adapter is a LoRA
// of its own (rank, alpha, rsLoRA, dropout, seed, initial A and B, as LinearLoRA takes them), so it
// takes its own optimizer; adapters are added and removed between steps. This class checks every
// argument, keeps what forward saved for backward and the adapters' dropout steps, and queues async
// calls (lib/async-queue.ts); its backend's MultiLoRAKernels compute.
import { AsyncOptions, CallQueue } from './async-queue';
import type { MultiLoRAAdapter, MultiLoRABackward, MultiLoRAForward, MultiLoRAKernels, Operand, Rows } from './backends/backend';
import { BACKENDS, backendFor } from './backends/registry';
import { Call, run, runAsync } from './call';
import type { Device, DType } from './dtype';
import { fail, said } from './errors';
import type { AdapterLayer, AdapterSettings, AdapterValues, MultiAdapterLayer } from './io/adapter-layer';
import { checkLinear, frozenParams, layerBackend, Linear, OUT_KEYS, OutOptions } from './linear';
import { LoRA } from './lora';
import { checkNoOverlap, exact, output, Reads, rows, TensorLike, withLast } from './operands';
import { placementOf } from './placement';
import { Random, randomSeed } from './random';
import { Tensor } from './tensor';
import { checkBoolean, checkDim, checkDropout, checkOptions, checkSeed, optionKeys, shapeString } from './validate';

/** The row name that takes the frozen layer alone. */
export const BASE_ADAPTER = '__base__';

/** One adapter's options: LinearLoRA's, with its rank. */
export interface AdapterOptions {
  rank: number;
  /** Default rank (scaling 1). */
  alpha?: number;
  rslora?: boolean;
  /** Dropout on this adapter's rows of the LoRA path, in [0, 1); active in training mode only. */
  dropout?: number;
  /** Seeds A's initialisation and the dropout masks, as LinearLoRA's seed does. */
  seed?: number;
  /** Initial A (I, r) and B (r, O), our layout. */
  A?: TensorLike;
  B?: TensorLike;
}
export const ADAPTER_KEYS = optionKeys<AdapterOptions>({ rank: true, alpha: true, rslora: true, dropout: true, seed: true, A: true, B: true });

export interface MultiLoRALinearOptions {
  /** The adapters by name, at least one; each name may not be '__base__'. */
  adapters: Record<string, AdapterOptions>;
}
const LAYER_KEYS = optionKeys<MultiLoRALinearOptions>({ adapters: true });

export interface MultiForwardOptions extends OutOptions {
  /** One adapter name per row of x (x's leading dimensions flattened), or '__base__'. */
  adapterNames: readonly string[];
}
const FORWARD_KEYS = optionKeys<MultiForwardOptions>({ ...OUT_KEYS.record, adapterNames: true });

export interface MultiBackwardOptions extends OutOptions {
  /** false skips dx (the layer below needs no gradient); backward then returns null. Default true. */
  inputGrad?: boolean;
}
const BACKWARD_KEYS = optionKeys<MultiBackwardOptions>({ out: true, inputGrad: true });

export type MultiForwardAsyncOptions = MultiForwardOptions & AsyncOptions;
export type MultiBackwardAsyncOptions = MultiBackwardOptions & AsyncOptions;
const FORWARD_ASYNC_KEYS = optionKeys<MultiForwardAsyncOptions>({ ...FORWARD_KEYS.record, signal: true });
const BACKWARD_ASYNC_KEYS = optionKeys<MultiBackwardAsyncOptions>({ ...BACKWARD_KEYS.record, signal: true });

/** An adapter of the layer: its LoRA, its dropout, and the seed and step of its masks. */
interface Adapter {
  readonly name: string;
  readonly lora: LoRA;
  readonly dropout: number;
  readonly maskSeed: number;
  /** Forwards that drew a mask for it: its rows' masks are those of a LinearLoRA given only them. */
  step: number;
}

/** What a training forward keeps for backward: x (a reference), the adapters in the call's order, and their dropout. */
interface Saved {
  x: Rows;
  adapters: readonly Adapter[];
  dropout: readonly number[];
}

const DROPOUT_HERE = () => BACKENDS.filter((b) => b.loraDropout).map((b) => b.label).join(' or ');
const DEVICES_HERE = () => BACKENDS.filter((b) => b.multiLoRALinear({ I: 1, O: 1, dtype: 'float32', math: 'tf32' }) !== null);

export class MultiLoRALinear implements MultiAdapterLayer {
  readonly base: Linear;
  /** Dropout is applied only while training (the default), as in PyTorch; an eval() forward keeps nothing for backward. */
  training = true;
  readonly #adapters = new Map<string, Adapter>();
  readonly #kernels: MultiLoRAKernels;
  readonly #queue = new CallQueue();
  readonly #dropoutHere: boolean;
  #saved: Saved | null = null;

  constructor(base: Linear, options: MultiLoRALinearOptions) {
    const where = 'MultiLoRALinear';
    this.base = checkLinear(where, base);
    const opts = checkOptions(where, options, LAYER_KEYS);
    const list = opts.adapters;
    if (list === null || typeof list !== 'object' || Array.isArray(list)) fail('ERR_ARGUMENT', where, 'options.adapters', 'an object of adapter options by name', list);
    const names = Object.keys(list);
    if (names.length === 0) fail('ERR_ARGUMENT', where, 'options.adapters', 'at least one adapter', said('an empty object'));
    const backend = layerBackend(base);  // its placement's backend, or the quantized kernels
    this.#dropoutHere = backend.loraDropout;
    const kernels = backend.multiLoRALinear({ I: base.inFeatures, O: base.outFeatures, dtype: base.dtype, math: base.math });
    if (kernels === null) {
      const here = DEVICES_HERE();
      fail('ERR_DEVICE', where, 'base', `a Linear on ${here.map((b) => `${b.label} (${b.dtypes.join(', ')})`).join(' or ')}`, said(`a ${base.dtype} one on ${backendFor(placementOf(base)).label}`),
        `MultiLoRALinear runs on ${here.map((b) => b.label).join(' or ')} only for now`);
    }
    // Every adapter is built before any is kept, so a refused one leaves nothing half made.
    const made: Adapter[] = [];
    try {
      for (const name of names) made.push(this.#makeAdapter(where, `options.adapters[${JSON.stringify(name)}]`, name, list[name]));
    } catch (e) {
      for (const a of made) a.lora.dispose();
      throw e;
    }
    for (const a of made) this.#adapters.set(a.name, a);
    this.#kernels = kernels;
  }

  /** Where the layer computes: its base's device. */
  get device(): Device {
    return this.base.device;
  }

  get dtype(): DType {
    return this.base.dtype;
  }

  /** The adapters' names, in the order they were added. */
  get adapterNames(): string[] {
    return [...this.#adapters.keys()];
  }

  train(mode = true): this {
    this.training = checkBoolean('MultiLoRALinear.train', 'mode', mode);
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** The adapter `name` as a LoRA: A, B (with .grad), rank, alpha, scaling, parameters(). */
  adapter(name: string): LoRA {
    return this.#find('MultiLoRALinear.adapter', 'name', name).lora;
  }

  /** Adds an adapter between steps (refused while a forward awaits its backward, or async calls are queued). */
  addAdapter(name: string, options: AdapterOptions): void {
    const where = 'MultiLoRALinear.addAdapter';
    this.#checkBetweenSteps(where);
    const a = this.#makeAdapter(where, 'options', name, options);
    this.#adapters.set(name, a);
  }

  /** Removes an adapter and gives back its A and B, between steps (as addAdapter). */
  removeAdapter(name: string): void {
    const where = 'MultiLoRALinear.removeAdapter';
    this.#checkBetweenSteps(where);
    const a = this.#find(where, 'name', name);
    this.#adapters.delete(name);
    a.lora.dispose();
  }

  /** y (..., O) for x (..., I), row m through the adapter options.adapterNames[m]. */
  forward(x: TensorLike, options: MultiForwardOptions): Tensor {
    const where = 'MultiLoRALinear.forward';
    this.#queue.checkIdle(where);
    const opts = checkOptions(where, options, FORWARD_KEYS);
    return run(this.#forwardCall(where, x, opts, this.training), (c) => this.#kernels.forward(c));
  }

  /** forward() on the libuv pool, after the calls already queued on this layer; see AsyncOptions. */
  forwardAsync(x: TensorLike, options: MultiForwardAsyncOptions): Promise<Tensor> {
    const where = 'MultiLoRALinear.forwardAsync';
    const training = this.training;
    return this.#queue.enqueue(where, options, FORWARD_ASYNC_KEYS, (opts) =>
      runAsync(() => this.#forwardCall(where, x, opts, training), (c) => this.#kernels.forwardAsync(c)));
  }

  /**
   * dx (..., I) for dy (..., O) of the last training forward, which it consumes; accumulates each
   * adapter's dA and dB into its A.grad and B.grad (zeroGrad between steps). W gets no gradient.
   */
  backward(dy: TensorLike, options?: MultiBackwardOptions): Tensor | null {
    const where = 'MultiLoRALinear.backward';
    this.#queue.checkIdle(where);
    return run(this.#backwardCall(where, dy, checkOptions(where, options, BACKWARD_KEYS)), (c) => this.#kernels.backward(c));
  }

  backwardAsync(dy: TensorLike, options?: MultiBackwardAsyncOptions): Promise<Tensor | null> {
    const where = 'MultiLoRALinear.backwardAsync';
    return this.#queue.enqueue(where, options, BACKWARD_ASYNC_KEYS, (opts) =>
      runAsync(() => this.#backwardCall(where, dy, opts), (c) => this.#kernels.backwardAsync(c)));
  }

  /** Every adapter's [A, B], in adapter order. W and b are frozen and not listed. */
  parameters(): Tensor[] {
    return [...this.#adapters.values()].flatMap((a) => a.lora.parameters());
  }

  /** Σ r_i·(I + O). */
  numTrainable(): number {
    let n = 0;
    for (const a of this.#adapters.values()) n += a.lora.numTrainable();
    return n;
  }

  /** O·I (+ O with a bias). */
  numFrozen(): number {
    return this.base.numParameters();
  }

  /** Zeroes every adapter's gradients; refused (ERR_BACKEND) while async calls are queued. */
  zeroGrad(): void {
    this.#queue.checkIdle('MultiLoRALinear.zeroGrad');
    for (const a of this.#adapters.values()) a.lora.zeroGrad();
  }

  /**
   * The adapter `name` as saveAdapter and loadAdapter see a layer (lib/io/adapter-layer.ts), so it is
   * saved as a PEFT adapter of its own and loads into a LinearLoRA, or back into this layer.
   */
  adapterLayer(where: string, arg: string, name: unknown): AdapterLayer {
    const a = this.#find(where, arg, name);
    const queue = this.#queue;
    const { inFeatures, outFeatures } = this.base;
    return {
      adapterSettings: (): AdapterSettings => ({ inFeatures, outFeatures, rank: a.lora.rank, alpha: a.lora.alpha, rslora: a.lora.rslora, dropout: a.dropout }),
      adapterWeights: (w, g) => ({ A: a.lora.A.hostView(w, `${g}.A`), B: a.lora.B.hostView(w, `${g}.B`) }),
      checkAdapterTarget: (w, g) => {
        queue.checkIdle(w);
        if (this.#adapters.get(a.name) !== a) fail('ERR_ARGUMENT', w, g, `a layer holding adapter ${JSON.stringify(a.name)}`, said('one it was removed from'));
        a.lora.A.assertLive(w, `${g}.A`);
        a.lora.B.assertLive(w, `${g}.B`);
      },
      setAdapter: (w, v: AdapterValues) => {
        a.lora.configure({ alpha: v.alpha, rslora: v.rslora });
        a.lora.A.write(v.A, w);
        a.lora.B.write(v.B, w);
      },
    };
  }

  /**
   * Releases every adapter and the workspaces (the base Linear belongs to the caller). Queued async
   * calls reject with ERR_DISPOSED; one whose kernel is running finishes.
   */
  dispose(): void {
    this.#queue.dispose();
    this.#saved = null;
    this.#kernels.dispose();
    for (const a of this.#adapters.values()) a.lora.dispose();
    this.#adapters.clear();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  #makeAdapter(where: string, arg: string, name: unknown, options: unknown): Adapter {
    if (typeof name !== 'string' || name === '' || name === BASE_ADAPTER) {
      fail('ERR_ARGUMENT', where, arg === 'options' ? 'name' : arg, `an adapter name: a non-empty string other than '${BASE_ADAPTER}'`, name);
    }
    if (this.#adapters.has(name)) fail('ERR_ARGUMENT', where, 'name', 'a name no adapter of this layer has', said(`${JSON.stringify(name)}, which one has`));
    const opts = checkOptions(where, options, ADAPTER_KEYS, arg);
    if (options === undefined) fail('ERR_ARGUMENT', where, arg, 'adapter options with a rank', options);
    const r = checkDim(where, `${arg}.rank`, opts.rank);
    const dropout = opts.dropout === undefined ? 0 : checkDropout(where, opts.dropout);
    const rng = new Random(opts.seed === undefined ? randomSeed() : checkSeed(where, opts.seed));
    // The draws in LinearLoRA's order: A's seed, then the masks', so an adapter equals a LinearLoRA of its seed.
    const lora = new LoRA(this.base.inFeatures, this.base.outFeatures, r, {
      alpha: opts.alpha, rslora: opts.rslora, seed: rng.nextSeed(), A: opts.A, B: opts.B, device: this.base.device,
    });
    return { name, lora, dropout, maskSeed: rng.nextSeed(), step: 0 };
  }

  #find(where: string, arg: string, name: unknown): Adapter {
    const a = typeof name === 'string' ? this.#adapters.get(name) : undefined;
    if (a === undefined) fail('ERR_ARGUMENT', where, arg, `the name of an adapter of this layer (${this.#namesText()})`, name);
    return a;
  }

  #namesText(): string {
    const names = this.adapterNames.map((n) => JSON.stringify(n));
    return names.length === 0 ? 'it has none' : `one of ${names.join(', ')}`;
  }

  #checkBetweenSteps(where: string): void {
    this.#queue.checkIdle(where);
    if (this.#saved !== null) {
      fail('ERR_ARGUMENT', where, '', 'a layer between steps', said('one whose last forward awaits its backward'), 'call backward() first (or run the forward in eval mode)');
    }
  }

  /** Each row's adapter (its position in the layer's order), or -1; and each adapter's row count. */
  #index(where: string, names: unknown, M: number, xShape: readonly number[]): { index: Int32Array; counts: Int32Array; list: Adapter[] } {
    if (!Array.isArray(names)) fail('ERR_ARGUMENT', where, 'options.adapterNames', `an array of ${M} adapter names (one per row of x)`, names);
    if (names.length !== M) {
      fail('ERR_SHAPE', where, 'options.adapterNames', `${M} names, one per row of x (shape ${shapeString(xShape)})`, said(`${names.length} names`));
    }
    const list = [...this.#adapters.values()];
    const position = new Map<string, number>(list.map((a, i) => [a.name, i]));
    const index = new Int32Array(M), counts = new Int32Array(list.length);
    for (let m = 0; m < M; m++) {
      const name = names[m];
      const i = name === BASE_ADAPTER ? -1 : typeof name === 'string' ? position.get(name) : undefined;
      if (i === undefined) {
        fail('ERR_ARGUMENT', where, `options.adapterNames[${m}]`, `the name of an adapter of this layer (${this.#namesText()}) or '${BASE_ADAPTER}'`, name);
      }
      index[m] = i;
      if (i >= 0) counts[i]++;
    }
    return { index, counts, list };
  }

  /** A and B of each adapter for one call, checked (a tensor may have been disposed or replaced). */
  #adapterParams(where: string, a: Adapter): { A: Operand; B: Operand } {
    const on = { device: this.device, dtype: 'float32' as const };
    const { inFeatures: I, outFeatures: O } = this.base;
    const r = a.lora.rank, arg = `adapter(${JSON.stringify(a.name)})`;
    return { A: exact(where, `${arg}.A`, a.lora.A, [I, r], on), B: exact(where, `${arg}.B`, a.lora.B, [r, O], on) };
  }

  #forwardCall(where: string, x: TensorLike, opts: Partial<MultiForwardOptions>, training: boolean): Call<MultiLoRAForward, Tensor> {
    const on = placementOf(this.base);
    const xin = rows(where, 'x', x, this.base.inFeatures, on);
    const { index, counts, list } = this.#index(where, opts.adapterNames, xin.M, xin.shape);
    // The dropout in effect on each adapter's rows, as the float32 kernel sees it.
    const dropout = list.map((a, i) => (training && counts[i] > 0 && Math.fround(a.dropout) > 0 ? a.dropout : 0));
    const dropped = dropout.findIndex((p) => p > 0);
    if (dropped >= 0 && !this.#dropoutHere) {
      fail('ERR_DEVICE', where, 'training mode', `dropout 0 on ${backendFor(on).label}`, said(`adapter ${JSON.stringify(list[dropped].name)} with dropout ${dropout[dropped]}`),
        `the LoRA path's dropout runs on ${DROPOUT_HERE()} only for now: use eval(), dropout: 0, or a layer there`);
    }
    const { W, bias } = frozenParams(where, this.base, 'base.');
    const params = list.map((a) => this.#adapterParams(where, a));
    const reads: [string, Operand | null][] = [['x', xin], ['base.weight', W], ['base.bias', bias]];
    params.forEach((p, i) => reads.push([`adapter(${JSON.stringify(list[i].name)}).A`, p.A], [`adapter(${JSON.stringify(list[i].name)}).B`, p.B]));
    const y = output(where, opts.out, withLast(xin.shape, this.base.outFeatures), on, reads);
    // Every check is done: the masks' steps advance, and a training forward is kept for backward.
    const adapters: MultiLoRAAdapter[] = list.map((a, i) => ({
      A: params[i].A, B: params[i].B, r: a.lora.rank, scaling: a.lora.scaling, dropout: dropout[i], seed: a.maskSeed, step: dropout[i] > 0 ? a.step++ : a.step,
    }));
    this.#saved = training ? { x: xin, adapters: list, dropout } : null;
    return { c: { where, x: xin, W, bias, adapters, index, y: y.op }, result: y.tensor };
  }

  #backwardCall(where: string, dy: TensorLike, opts: Partial<MultiBackwardOptions>): Call<MultiLoRABackward, Tensor | null> {
    const saved = this.#saved;
    if (saved === null) fail('ERR_ARGUMENT', where, '', 'a training-mode forward() before backward()', said('none'), 'each backward consumes its forward');
    const { inFeatures: I, outFeatures: O } = this.base;
    const on = placementOf(this.base);
    const d = rows(where, 'dy', dy, O, on);
    if (d.M !== saved.x.M) {
      fail('ERR_SHAPE', where, 'dy', `${saved.x.M} rows of ${O} (shape ${shapeString(withLast(saved.x.shape, O))}, from the last forward)`, said(`shape ${shapeString(d.shape)}`));
    }
    const inputGrad = opts.inputGrad === undefined ? true : checkBoolean(where, 'options.inputGrad', opts.inputGrad);
    const { W } = frozenParams(where, this.base, 'base.');
    const grads = { device: this.device, dtype: 'float32' as const };
    const params = saved.adapters.map((a) => this.#adapterParams(where, a));
    const reads: Reads = [['dy', d], ['x (saved by forward)', saved.x], ['base.weight', W],
      ...params.flatMap((p, i) => [[`adapter(${JSON.stringify(saved.adapters[i].name)}).A`, p.A], [`adapter(${JSON.stringify(saved.adapters[i].name)}).B`, p.B]] as const)];
    const gradOps: Array<{ dA: Operand; dB: Operand }> = [];
    saved.adapters.forEach((a) => {
      const arg = `adapter(${JSON.stringify(a.name)})`, r = a.lora.rank;
      const dA = exact(where, `${arg}.A.grad`, a.lora.A.grad, [I, r], grads);
      const dB = exact(where, `${arg}.B.grad`, a.lora.B.grad, [r, O], grads);
      checkNoOverlap(where, `${arg}.A.grad`, dA, reads);
      checkNoOverlap(where, `${arg}.B.grad`, dB, reads);
      for (const [j, g] of gradOps.entries()) {
        const other = `adapter(${JSON.stringify(saved.adapters[j].name)})`;
        checkNoOverlap(where, `${arg}.A.grad`, dA, [[`${other}.A.grad`, g.dA], [`${other}.B.grad`, g.dB]]);
        checkNoOverlap(where, `${arg}.B.grad`, dB, [[`${other}.A.grad`, g.dA], [`${other}.B.grad`, g.dB], [`${arg}.A.grad`, dA]]);
      }
      gradOps.push({ dA, dB });
    });
    const gradReads: Reads = gradOps.flatMap((g, i) => [[`adapter(${JSON.stringify(saved.adapters[i].name)}).A.grad`, g.dA], [`adapter(${JSON.stringify(saved.adapters[i].name)}).B.grad`, g.dB]] as const);
    const dx = inputGrad ? output(where, opts.out, saved.x.shape, on, [...reads, ...gradReads]) : null;
    const adapters = saved.adapters.map((a, i) => ({
      A: params[i].A, B: params[i].B, r: a.lora.rank, scaling: a.lora.scaling, dropout: saved.dropout[i], seed: a.maskSeed, step: a.step, dA: gradOps[i].dA, dB: gradOps[i].dB,
    }));
    this.#saved = null;
    return { c: { where, x: saved.x, dy: d, W, adapters, dx: dx?.op ?? null }, result: dx?.tensor ?? null };
  }
}

export function isMultiLoRALinear(v: unknown): v is MultiLoRALinear {
  return v instanceof MultiLoRALinear;
}
