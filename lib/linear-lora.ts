// LinearLoRA: a frozen Linear plus a trainable LoRA, y = x·Wᵀ + b + scaling·(x̃·A)·B.
//
// It lives with its base, on the backend chosen by the base's placement; its kernels (created by that
// backend) hold the workspaces. This class checks every argument, keeps the training mode and what
// forward saved for backward (x, its rows, the dropout in effect), merges, and queues async calls
// (lib/async-queue.ts). backward accumulates into lora.A.grad and lora.B.grad and returns dx.
import './portable-types';
import { AsyncOptions, CallQueue } from './async-queue';
import type { LinearForward, LinearLoRAKernels, LoRABackward, LoRAForward, LoRAParams, Rows } from './backends/backend';
import { BACKENDS, backendFor, hostKernels } from './backends/registry';
import { Call, run, runAsync } from './call';
import type { Device, DType } from './dtype';
import { fail, said } from './errors';
import type { AdapterLayer, AdapterSettings, AdapterValues } from './io/adapter-layer';
import { checkLinear, frozenParams, layerBackend, Linear, linearKernels, OUT_KEYS, OutOptions } from './linear';
import { LoRA } from './lora';
import { checkNoOverlap, exact, output, Reads, rows, TensorLike, withLast } from './operands';
import { placementOf } from './placement';
import { Random, randomSeed } from './random';
import { Tensor } from './tensor';
import { checkBoolean, checkDim, checkDropout, checkFinite, checkOptions, checkSeed, optionKeys, shapeString } from './validate';

export type { AsyncOptions };

export interface LinearLoRAOptions {
  /** Default r (scaling 1). */
  alpha?: number;
  rslora?: boolean;
  /** Dropout on the LoRA path's input, in [0, 1); active in training mode only. */
  dropout?: number;
  /** false runs PEFT's unfused order of operations (for benchmarks and cross-checks). */
  fused?: boolean;
  /** Seeds A's initialisation and the dropout masks. */
  seed?: number;
  /** Initial A (I, r) and B (r, O), our layout. */
  A?: TensorLike;
  B?: TensorLike;
  /** Refuse non-finite inputs (x, dy) with ERR_NOT_FINITE; costs one pass over each. Default false. */
  checkFinite?: boolean;
}
export const LINEAR_LORA_KEYS = optionKeys<LinearLoRAOptions>({
  alpha: true, rslora: true, dropout: true, fused: true, seed: true, A: true, B: true, checkFinite: true,
});

export interface BackwardOptions extends OutOptions {
  /** false skips dx (the layer below needs no gradient); backward then returns null. Default true. */
  inputGrad?: boolean;
}
const BACKWARD_KEYS = optionKeys<BackwardOptions>({ out: true, inputGrad: true });

export type ForwardAsyncOptions = OutOptions & AsyncOptions;
export type BackwardAsyncOptions = BackwardOptions & AsyncOptions;
const FORWARD_ASYNC_KEYS = optionKeys<ForwardAsyncOptions>({ ...OUT_KEYS.record, signal: true });
const BACKWARD_ASYNC_KEYS = optionKeys<BackwardAsyncOptions>({ ...BACKWARD_KEYS.record, signal: true });

/** What forward keeps for backward: x itself (a reference, not a copy), its rows, and the dropout in effect. */
interface Saved {
  x: Rows;
  dropout: number;
}

/** Where the LoRA path's dropout runs, for the message where it does not. */
const DROPOUT_HERE = [...new Set(BACKENDS.filter((b) => b.loraDropout).map((b) => b.label))].join(' or ');

export interface MergeOptions {
  /** Merge into a quantized (int8, nf4) base by quantizing the merged weight anew (default false: refused). */
  requantize?: boolean;
}
const MERGE_KEYS = optionKeys<MergeOptions>({ requantize: true });

export class LinearLoRA implements AdapterLayer {
  readonly base: Linear;
  readonly lora: LoRA;
  readonly dropout: number;
  readonly fused: boolean;
  readonly checkFinite: boolean;
  /** Dropout is applied only while training (the default), as in PyTorch. */
  training = true;
  #merged = false;
  #saved: Saved | null = null;
  readonly #kernels: LinearLoRAKernels;
  readonly #dropoutHere: boolean;
  readonly #queue = new CallQueue();

  constructor(base: Linear, rank: number, options?: LinearLoRAOptions) {
    const where = 'LinearLoRA';
    this.base = checkLinear(where, base);
    const r = checkDim(where, 'rank', rank);
    const opts = checkOptions(where, options, LINEAR_LORA_KEYS);
    this.dropout = opts.dropout === undefined ? 0 : checkDropout(where, opts.dropout);
    this.fused = opts.fused === undefined ? true : checkBoolean(where, 'options.fused', opts.fused);
    this.checkFinite = opts.checkFinite === undefined ? false : checkBoolean(where, 'options.checkFinite', opts.checkFinite);
    const seed = opts.seed === undefined ? randomSeed() : checkSeed(where, opts.seed);
    const rng = new Random(seed);
    this.lora = new LoRA(base.inFeatures, base.outFeatures, r, {
      alpha: opts.alpha, rslora: opts.rslora, seed: rng.nextSeed(), A: opts.A, B: opts.B, device: base.device,
    });
    const backend = layerBackend(base);
    this.#dropoutHere = backend.loraDropout;
    this.#kernels = backend.linearLoRA({
      I: base.inFeatures, O: base.outFeatures, r, dtype: base.dtype, math: base.math, fused: this.fused, seed: rng.nextSeed(),
    });
  }

  /** Where the layer computes: its base's device. */
  get device(): Device {
    return this.base.device;
  }

  /** The compute dtype (its base's); A and B stay float32 either way. */
  get dtype(): DType {
    return this.base.dtype;
  }

  get rank(): number {
    return this.lora.rank;
  }

  get scaling(): number {
    return this.lora.scaling;
  }

  get merged(): boolean {
    return this.#merged;
  }

  /** The dropout mask of the last training forward, (M, I), 1 = kept; null without dropout. */
  get lastDropoutMask(): Uint8Array | null {
    const s = this.#saved;
    return s && s.dropout > 0 ? this.#kernels.dropoutMask(s.x.M) : null;
  }

  train(mode = true): this {
    this.training = checkBoolean('LinearLoRA.train', 'mode', mode);
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** y (..., O) for x (..., I); saves x and s for backward. */
  forward(x: TensorLike, options?: OutOptions): Tensor {
    const where = 'LinearLoRA.forward';
    this.#queue.checkIdle(where);
    const { out } = checkOptions(where, options, OUT_KEYS);
    return run(this.#forwardCall(where, x, out, this.training), (c) => (this.#merged ? linearKernels(this.base).forward(c) : this.#kernels.forward(c)));
  }

  /** forward() on the libuv pool (or the device), after the calls already queued on this layer; see AsyncOptions. */
  forwardAsync(x: TensorLike, options?: ForwardAsyncOptions): Promise<Tensor> {
    const where = 'LinearLoRA.forwardAsync';
    const training = this.training;  // the mode at call time, even if train()/eval() comes before it runs
    return this.#queue.enqueue(where, options, FORWARD_ASYNC_KEYS, ({ out }) =>
      runAsync(() => this.#forwardCall(where, x, out, training), (c) => (this.#merged ? linearKernels(this.base).forwardAsync(c) : this.#kernels.forwardAsync(c))));
  }

  /**
   * dx (..., I) for dy (..., O) of the last forward; accumulates dA into lora.A.grad and dB into
   * lora.B.grad (call zeroGrad between steps). Never computes a gradient for W.
   */
  backward(dy: TensorLike, options?: BackwardOptions): Tensor | null {
    const where = 'LinearLoRA.backward';
    this.#queue.checkIdle(where);
    return run(this.#backwardCall(where, dy, checkOptions(where, options, BACKWARD_KEYS)), (c) => this.#kernels.backward(c));
  }

  /** backward() on the libuv pool (or the device), after the calls already queued on this layer; see AsyncOptions. */
  backwardAsync(dy: TensorLike, options?: BackwardAsyncOptions): Promise<Tensor | null> {
    const where = 'LinearLoRA.backwardAsync';
    return this.#queue.enqueue(where, options, BACKWARD_ASYNC_KEYS, (opts) =>
      runAsync(() => this.#backwardCall(where, dy, opts), (c) => this.#kernels.backwardAsync(c)));
  }

  /**
   * Folds scaling·(A·B)ᵀ into the base weight, in fp32 on host views (the weight itself on the CPU; a
   * download and an upload on a device, where a 16-bit weight keeps that dtype's rounding: a bfloat16
   * weight, on the CPU too, is rounded to bf16 after the sum). Refuses (ERR_NOT_FINITE) a non-finite
   * result, leaving the weight unchanged. A quantized base (int8, nf4) is refused (ERR_ARGUMENT)
   * unless `{ requantize: true }`: the merged weight is then quantized anew, which adds a second
   * quantization error to the base and cannot be undone exactly by unmerge().
   */
  merge(options?: MergeOptions): void {
    const where = 'LinearLoRA.merge';
    const opts = checkOptions(where, options, MERGE_KEYS);
    this.#queue.checkIdle(where);
    if (this.#merged) return;
    this.#checkQuantized(where, opts);
    this.#mergeSign(where, 1);
    this.#merged = true;
  }

  /** Subtracts what merge() added; bit-exact wherever that arithmetic was exact (never through a re-quantization). */
  unmerge(options?: MergeOptions): void {
    const where = 'LinearLoRA.unmerge';
    const opts = checkOptions(where, options, MERGE_KEYS);
    this.#queue.checkIdle(where);
    if (!this.#merged) return;
    this.#checkQuantized(where, opts);
    this.#mergeSign(where, -1);
    this.#merged = false;
  }

  #checkQuantized(where: string, opts: MergeOptions): void {
    const requantize = opts.requantize === undefined ? false : checkBoolean(where, 'options.requantize', opts.requantize);
    const q = this.base.quantize;
    if (q !== null && !requantize) {
      fail('ERR_ARGUMENT', where, 'base.weight', 'a weight that is not quantized, or { requantize: true }', said(`an ${q} weight`),
        'merging into a quantized base quantizes the merged weight anew (a second rounding of W); ask for it with { requantize: true }, or keep the adapter separate');
    }
  }

  /** r·(I + O). */
  numTrainable(): number {
    return this.lora.numTrainable();
  }

  /** O·I (+ O with a bias). */
  numFrozen(): number {
    return this.base.numParameters();
  }

  /** The trainable parameters: [A, B]. W and b are frozen and not listed. */
  parameters(): Tensor[] {
    return this.lora.parameters();
  }

  // The adapter as saveAdapter and loadAdapter see it (lib/io/adapter-layer.ts).

  adapterSettings(_where: string, _arg: string): AdapterSettings {
    const { lora } = this;
    return { inFeatures: lora.inFeatures, outFeatures: lora.outFeatures, rank: lora.rank, alpha: lora.alpha, rslora: lora.rslora, dropout: this.dropout };
  }

  adapterWeights(where: string, arg: string): { A: Float32Array; B: Float32Array } {
    return { A: this.lora.A.hostView(where, `${arg}.lora.A`), B: this.lora.B.hostView(where, `${arg}.lora.B`) };
  }

  checkAdapterTarget(where: string, arg: string): void {
    if (this.#merged) fail('ERR_ARGUMENT', where, arg, 'an unmerged layer (loading into a merged one would leave the old adapter in the weight; call unmerge() first)', said('a merged one'));
    this.lora.A.assertLive(where, `${arg}.lora.A`);
    this.lora.B.assertLive(where, `${arg}.lora.B`);
  }

  setAdapter(where: string, v: AdapterValues): void {
    this.lora.configure({ alpha: v.alpha, rslora: v.rslora });
    // On a device an upload, which bumps the storage's version: the layer rebuilds W_ext before its next forward.
    this.lora.A.write(v.A, where);
    this.lora.B.write(v.B, where);
  }

  /** Zeroes lora.A.grad and lora.B.grad; refused (ERR_BACKEND) while async calls are queued, like any sync call. */
  zeroGrad(): void {
    this.#queue.checkIdle('LinearLoRA.zeroGrad');
    this.lora.zeroGrad();
  }

  /**
   * Releases the adapter and the workspaces (the base Linear belongs to the caller). Async calls
   * still queued reject with ERR_DISPOSED now; one whose kernel is running finishes and resolves.
   */
  dispose(): void {
    this.#queue.dispose();
    this.#forget();
    this.#kernels.dispose();
    this.lora.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  #forget(): void {
    this.#saved = null;
    this.#kernels.forget();
  }

  /** W, b, A and B for one call, checked (a weight may have been disposed or replaced since the last). */
  #params(where: string): LoRAParams {
    const on = { device: this.device, dtype: 'float32' as const };
    const { inFeatures: I, outFeatures: O } = this.base;
    const r = this.rank;
    const { W, bias } = frozenParams(where, this.base, 'base.');
    return { W, bias, A: exact(where, 'lora.A', this.lora.A, [I, r], on), B: exact(where, 'lora.B', this.lora.B, [r, O], on), scaling: this.lora.scaling };
  }

  /** The forward's arguments; a merged layer runs them as its base's (the adapter lives in W). */
  #forwardCall(where: string, x: TensorLike, out: unknown, training: boolean): Call<LoRAForward & LinearForward, Tensor> {
    const on = placementOf(this.base);
    const xin = rows(where, 'x', x, this.base.inFeatures, on);
    const dropout = training && Math.fround(this.dropout) > 0 ? this.dropout : 0;  // as the float32 kernel sees it
    if (dropout > 0 && !this.#merged && !this.#dropoutHere) {
      fail('ERR_DEVICE', where, 'training mode', `dropout 0 on ${backendFor(on).label}`, said(`dropout ${dropout}`),
        `the LoRA path's dropout runs on ${DROPOUT_HERE} only for now: use eval(), dropout: 0, or a layer there`);
    }
    if (this.checkFinite) checkFinite(where, 'x', xin.storage.hostView(where));
    const p = this.#params(where);
    const y = output(where, out, withLast(xin.shape, this.base.outFeatures), on,
      [['x', xin], ['base.weight', p.W], ['base.bias', p.bias], ['lora.A', p.A], ['lora.B', p.B]]);
    // A merged layer has nothing to train: nothing to save for backward.
    if (this.#merged) this.#forget();
    else this.#saved = { x: xin, dropout };
    return { c: { where, x: xin, p, y: y.op, W: p.W, bias: p.bias, dropout }, result: y.tensor };
  }

  #backwardCall(where: string, dy: TensorLike, opts: Partial<BackwardOptions>): Call<LoRABackward, Tensor | null> {
    const saved = this.#saved;
    if (saved === null) {
      fail('ERR_ARGUMENT', where, '', 'a forward() before backward()', said('none'), this.#merged ? 'the layer is merged: unmerge() to train' : undefined);
    }
    const { inFeatures: I, outFeatures: O } = this.base;
    const on = placementOf(this.base);
    const d = rows(where, 'dy', dy, O, on);
    const xShape = saved.x.shape;
    if (d.M !== saved.x.M) {
      fail('ERR_SHAPE', where, 'dy', `${saved.x.M} rows of ${O} (shape ${shapeString(withLast(xShape, O))}, from the last forward)`, said(`shape ${shapeString(d.shape)}`));
    }
    if (this.checkFinite) checkFinite(where, 'dy', d.storage.hostView(where));
    const inputGrad = opts.inputGrad === undefined ? true : checkBoolean(where, 'options.inputGrad', opts.inputGrad);
    const p = this.#params(where);
    const r = this.rank, grads = { device: this.device, dtype: 'float32' as const };
    const dA = exact(where, 'lora.A.grad', this.lora.A.grad, [I, r], grads);
    const dB = exact(where, 'lora.B.grad', this.lora.B.grad, [r, O], grads);
    // The kernels read x (saved by forward) and dy while they accumulate into the gradients.
    const reads: Reads = [['dy', d], ['x (saved by forward)', saved.x], ['base.weight', p.W], ['lora.A', p.A], ['lora.B', p.B]];
    checkNoOverlap(where, 'lora.A.grad', dA, reads);
    checkNoOverlap(where, 'lora.B.grad', dB, reads);
    const dx = inputGrad ? output(where, opts.out, xShape, on, [...reads, ['lora.A.grad', dA], ['lora.B.grad', dB]]) : null;
    return { c: { where, x: saved.x, dy: d, p, dA, dB, dx: dx?.op ?? null, dropout: saved.dropout }, result: dx?.tensor ?? null };
  }

  #mergeSign(where: string, sign: 1 | -1): void {
    const p = this.#params(where);
    const W = p.W.storage.hostView(where);
    const { inFeatures: I, outFeatures: O } = this.base;
    if (!hostKernels.merge(W, p.A.storage.hostView(where), p.B.storage.hostView(where), I, O, this.rank, p.scaling, sign)) {
      fail('ERR_NOT_FINITE', where, 'base.weight', 'a finite merged weight', said('a non-finite result'), 'the weight is unchanged');
    }
    p.W.storage.write(W, where);
    this.#forget();
  }
}
