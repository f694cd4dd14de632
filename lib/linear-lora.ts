// LinearLoRA: a frozen Linear plus a trainable LoRA, y = x·Wᵀ + b + scaling·(x̃·A)·B.
//
// forward saves what backward needs (x, and s = x̃·A in the workspace); backward accumulates into
// lora.A.grad and lora.B.grad and returns dx. Async calls on one layer run one at a time in call
// order on the libuv pool; a sync call while async work is queued is refused (it would race the
// queued work for the layer's workspaces).
//
// Cancelling: an async call that has not started yet (it waits behind earlier calls on this layer)
// is rejected at once when its options.signal aborts, or when the layer is disposed: a LoraError with
// code ERR_ARGUMENT and name 'AbortError' (cause: signal.reason) for an abort, ERR_DISPOSED for a
// dispose. A call whose kernel has started runs to the end and resolves: a kernel cannot be
// interrupted, and the native side holds every buffer it touches until it is done, so dispose()
// never frees memory a running kernel uses (it releases the JS references; the GC frees the rest).
//
// On the CUDA device (the base Linear lives there) forward, backward and merge are
// lib/device/lora-layer.ts's; this class keeps the queue, the training mode and disposal.
import { LoraBackwardArgs, LoraForwardArgs, native } from './backends/cpu/binding';
import { Device, DType } from './dtype';
import { DeviceForwardState, DeviceLoraLayer } from './backends/cuda/linear-lora';
import { whenDeviceDone } from './backends/cuda/sync';
import { fail, LoraError } from './errors';
import { checkNoOverlap, output, resolveRows, TensorLike } from './inputs';
import { checkLinear, Linear, OUT_KEYS, OutOptions } from './linear';
import { LoRA } from './lora';
import { Random, randomSeed } from './random';
import { Tensor } from './tensor';
import { checkBoolean, checkDim, checkDropout, checkFinite, checkOptions, checkSeed, OptionKeys, optionKeys, shapeString } from './validate';
import { Workspace } from './backends/cpu/workspace';

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

export interface AsyncOptions {
  /**
   * Cancels the call while it waits behind earlier calls on this layer: it rejects at once with a
   * LoraError (code ERR_ARGUMENT, name 'AbortError', cause signal.reason) and never runs. No effect
   * once its kernel has started.
   */
  signal?: AbortSignal;
}

export type ForwardAsyncOptions = OutOptions & AsyncOptions;
export type BackwardAsyncOptions = BackwardOptions & AsyncOptions;
const FORWARD_ASYNC_KEYS = optionKeys<ForwardAsyncOptions>({ ...OUT_KEYS.record, signal: true });
const BACKWARD_ASYNC_KEYS = optionKeys<BackwardAsyncOptions>({ ...BACKWARD_KEYS.record, signal: true });

interface Saved {
  x: Float32Array;
  shape: readonly number[];
  M: number;
  dropoutP: number;
}

export class LinearLoRA {
  readonly base: Linear;
  readonly lora: LoRA;
  readonly dropout: number;
  readonly fused: boolean;
  readonly checkFinite: boolean;
  /** Dropout is applied only while training (the default), as in PyTorch. */
  training = true;
  #merged = false;
  #disposed = false;
  readonly #seed: number;
  #step = 0;
  readonly #ws: Workspace;
  #saved: Saved | null = null;
  /** The layer on the CUDA device (lib/device/lora-layer.ts) when its base lives there; null on the CPU. */
  readonly #dev: DeviceLoraLayer | null;
  #queue: Promise<unknown> = Promise.resolve();
  #pending = 0;
  /** Calls queued but not started, each with the function that rejects it now (abort, dispose). */
  readonly #waiting = new Set<(reason: 'abort' | 'dispose') => void>();

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
    this.#seed = rng.nextSeed();
    this.#ws = new Workspace(base.inFeatures, r);
    this.#dev = base.device === 'cuda' ? new DeviceLoraLayer(base, this.lora, this.fused, this.checkFinite) : null;
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
    return s && s.dropoutP > 0 ? this.#ws.mask.subarray(0, s.M * this.base.inFeatures) : null;
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
    this.#checkIdle(where);
    const { out } = checkOptions(where, options, OUT_KEYS);
    if (this.#dev) return this.#dev.forward(where, x, out, this.#deviceState());
    const { args, y } = this.#forwardArgs(where, x, out);
    if (args) native.loraForward(args);
    return y;
  }

  /** forward() on the libuv pool, after the calls already queued on this layer; see AsyncOptions. */
  forwardAsync(x: TensorLike, options?: ForwardAsyncOptions): Promise<Tensor> {
    const where = 'LinearLoRA.forwardAsync';
    const training = this.training;  // the mode at call time, even if train()/eval() comes before it runs
    return this.#enqueue(where, options, FORWARD_ASYNC_KEYS, async ({ out }) => {
      if (this.#dev) {
        this.#checkLive(where);
        return whenDeviceDone(this.#dev.forward(where, x, out, this.#deviceState(training)));
      }
      const { args, y } = this.#forwardArgs(where, x, out, training);
      if (args) await native.loraForwardAsync(args);
      return y;
    });
  }

  /**
   * dx (..., I) for dy (..., O) of the last forward; accumulates dA into lora.A.grad and dB into
   * lora.B.grad (call zeroGrad between steps). Never computes a gradient for W.
   */
  backward(dy: TensorLike, options?: BackwardOptions): Tensor | null {
    const where = 'LinearLoRA.backward';
    this.#checkIdle(where);
    const opts = checkOptions(where, options, BACKWARD_KEYS);
    if (this.#dev) return this.#dev.backward(where, dy, opts, this.#merged);
    const { args, dx } = this.#backwardArgs(where, dy, opts);
    native.loraBackward(args);
    return dx;
  }

  /** backward() on the libuv pool, after the calls already queued on this layer; see AsyncOptions. */
  backwardAsync(dy: TensorLike, options?: BackwardAsyncOptions): Promise<Tensor | null> {
    const where = 'LinearLoRA.backwardAsync';
    return this.#enqueue(where, options, BACKWARD_ASYNC_KEYS, async (opts) => {
      if (this.#dev) {
        this.#checkLive(where);
        return whenDeviceDone(this.#dev.backward(where, dy, opts, this.#merged));
      }
      const { args, dx } = this.#backwardArgs(where, dy, opts);
      await native.loraBackwardAsync(args);
      return dx;
    });
  }

  /** Folds scaling·(A·B)ᵀ into the base weight (fp32). Refuses (ERR_NOT_FINITE) a non-finite result. */
  merge(): void {
    this.#checkIdle('LinearLoRA.merge');
    if (this.#merged) return;
    if (this.#dev) this.#dev.merge('LinearLoRA.merge', 1);
    else this.#mergeSign('LinearLoRA.merge', 1);
    this.#merged = true;
    this.#saved = null;
  }

  /** Subtracts what merge() added; bit-exact wherever that arithmetic was exact. */
  unmerge(): void {
    this.#checkIdle('LinearLoRA.unmerge');
    if (!this.#merged) return;
    if (this.#dev) this.#dev.merge('LinearLoRA.unmerge', -1);
    else this.#mergeSign('LinearLoRA.unmerge', -1);
    this.#merged = false;
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

  /** Zeroes lora.A.grad and lora.B.grad; refused (ERR_BACKEND) while async calls are queued, like any sync call. */
  zeroGrad(): void {
    this.#checkIdle('LinearLoRA.zeroGrad');
    this.lora.zeroGrad();
  }

  /**
   * Releases the adapter and the workspaces (the base Linear belongs to the caller). Async calls
   * still queued reject with ERR_DISPOSED now; one whose kernel is running finishes and resolves.
   */
  dispose(): void {
    this.#disposed = true;
    this.#saved = null;
    this.#dev?.dispose();
    for (const reject of [...this.#waiting]) reject('dispose');
    this.lora.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  #checkIdle(where: string): void {
    this.#checkLive(where);
    if (this.#pending > 0) {
      throw new LoraError('ERR_BACKEND', `${where}: expected no queued async work on this layer but received a sync call with ${this.#pending} pending; await them first`);
    }
  }

  /** What the device forward needs to know of this layer's mode. */
  #deviceState(training = this.training): DeviceForwardState {
    return { merged: this.#merged, dropout: training && Math.fround(this.dropout) > 0 ? this.dropout : 0 };
  }

  #checkLive(where: string): void {
    if (this.#disposed) throw new LoraError('ERR_DISPOSED', `${where}: expected a live layer but received a disposed one`);
  }

  /**
   * Runs `job` with the call's options after every call queued before it. Options are checked now,
   * so a refused call never joins the queue. Until it starts it can be rejected early (abort,
   * dispose); it then never runs, and the queue behind it goes on.
   */
  #enqueue<O extends AsyncOptions, T>(where: string, options: unknown, keys: OptionKeys<O>, job: (opts: Partial<O>) => Promise<T>): Promise<T> {
    let opts: Partial<O>, signal: AbortSignal | undefined;
    try {
      opts = checkOptions(where, options, keys);
      signal = abortSignal(where, opts.signal);
    } catch (e) {
      return Promise.reject(e);
    }
    if (signal?.aborted) return Promise.reject(abortError(where, signal));
    this.#pending++;
    let cancelled = false;
    let rejectNow!: (e: LoraError) => void;
    const early = new Promise<never>((_, reject) => { rejectNow = reject; });
    const cancel = (reason: 'abort' | 'dispose') => {
      cancelled = true;
      this.#waiting.delete(cancel);
      signal?.removeEventListener('abort', onAbort);
      rejectNow(reason === 'abort' ? abortError(where, signal!) : new LoraError('ERR_DISPOSED', `${where}: expected a live layer but received one disposed while this call was queued; it did not run`));
    };
    const onAbort = () => cancel('abort');
    this.#waiting.add(cancel);
    signal?.addEventListener('abort', onAbort, { once: true });
    const run = this.#queue.then(() => {
      if (cancelled) return undefined as T;  // already rejected through `early`
      this.#waiting.delete(cancel);
      signal?.removeEventListener('abort', onAbort);
      return job(opts);
    });
    const done = () => { this.#pending--; };
    this.#queue = run.then(done, done);
    return Promise.race([run, early]);
  }

  #mergeSign(where: string, sign: 1 | -1): void {
    const ok = native.merge({
      W: this.base.weight.buffer(`${where}: base.weight`),
      A: this.lora.A.buffer(`${where}: lora.A`),
      B: this.lora.B.buffer(`${where}: lora.B`),
      I: this.base.inFeatures, O: this.base.outFeatures, r: this.rank, scaling: this.scaling, sign,
    });
    if (!ok) throw new LoraError('ERR_NOT_FINITE', `${where}: expected a finite merged weight but received a non-finite result; the weight is unchanged`);
  }

  #forwardArgs(where: string, x: TensorLike, out: unknown, training = this.training): { args: LoraForwardArgs | null; y: Tensor } {
    this.#checkLive(where);
    const { inFeatures: I, outFeatures: O } = this.base;
    const r = this.rank;
    const xin = resolveRows(where, 'x', x, I);
    if (this.checkFinite) checkFinite(where, 'x', xin.data);
    const W = this.base.weight.buffer(`${where}: base.weight`);
    const bias = this.base.bias?.buffer(`${where}: base.bias`) ?? null;
    const A = this.lora.A.buffer(`${where}: lora.A`), B = this.lora.B.buffer(`${where}: lora.B`);
    const y = output(where, out, [...xin.shape.slice(0, -1), O], [['x', xin.data], ['base.weight', W], ['base.bias', bias], ['lora.A', A], ['lora.B', B]]);
    if (this.#merged) {  // the adapter lives in W now: the base GEMM is the whole layer
      native.linearForward({ M: xin.M, I, O, x: xin.data, W, bias, y: y.buffer() });
      this.#saved = null;
      return { args: null, y };
    }
    const p = training && Math.fround(this.dropout) > 0 ? this.dropout : 0;  // as the float32 kernel sees it
    this.#ws.ensure(xin.M, p > 0);
    const args: LoraForwardArgs = {
      M: xin.M, I, O, r, x: xin.data, W, bias, A, B,
      scaling: this.scaling, fused: this.fused, s: this.#ws.s, y: y.buffer(),
    };
    if (p > 0) Object.assign(args, { dropoutP: p, seed: this.#seed, step: this.#step++, mask: this.#ws.mask, xDrop: this.#ws.xDrop });
    this.#saved = { x: xin.data, shape: xin.shape, M: xin.M, dropoutP: p };
    return { args, y };
  }

  #backwardArgs(where: string, dy: TensorLike, opts: Partial<BackwardOptions>): { args: LoraBackwardArgs; dx: Tensor | null } {
    this.#checkLive(where);
    const saved = this.#saved;
    if (saved === null) {
      throw new LoraError('ERR_ARGUMENT', `${where}: expected a forward() before backward() but received none${this.#merged ? ' (the layer is merged: unmerge() to train)' : ''}`);
    }
    const { inFeatures: I, outFeatures: O } = this.base;
    const d = resolveRows(where, 'dy', dy, O);
    if (d.M !== saved.M) {
      fail('ERR_SHAPE', where, 'dy', `${saved.M} rows of ${O} (shape ${shapeString([...saved.shape.slice(0, -1), O])}, from the last forward)`, `shape ${shapeString(d.shape)}`);
    }
    if (this.checkFinite) checkFinite(where, 'dy', d.data);
    const inputGrad = opts.inputGrad === undefined ? true : checkBoolean(where, 'options.inputGrad', opts.inputGrad);
    const W = this.base.weight.buffer(`${where}: base.weight`);
    const A = this.lora.A.buffer(`${where}: lora.A`), B = this.lora.B.buffer(`${where}: lora.B`);
    const dA = this.lora.A.grad!.buffer(`${where}: lora.A.grad`), dB = this.lora.B.grad!.buffer(`${where}: lora.B.grad`);
    // The kernel reads x (saved by forward) and dy while it accumulates into the gradients.
    const reads = [['dy', d.data], ['x (saved by forward)', saved.x], ['base.weight', W], ['lora.A', A], ['lora.B', B]] as const;
    checkNoOverlap(where, 'lora.A.grad', dA, reads);
    checkNoOverlap(where, 'lora.B.grad', dB, reads);
    const dx = inputGrad ? output(where, opts.out, saved.shape, [...reads, ['lora.A.grad', dA], ['lora.B.grad', dB]]) : null;
    const args: LoraBackwardArgs = {
      M: saved.M, I, O, r: this.rank, x: saved.x, s: this.#ws.s, dy: d.data, W, A, B,
      scaling: this.scaling, fused: this.fused, ds: this.#ws.ds, dx: dx ? dx.buffer() : null, dA, dB,
      accumulate: true,
    };
    if (saved.dropoutP > 0) Object.assign(args, { dropoutP: saved.dropoutP, mask: this.#ws.mask, xDrop: this.#ws.xDrop, loraDx: this.#ws.loraDx });
    return { args, dx };
  }
}

/** options.signal, checked; undefined when absent. */
function abortSignal(where: string, signal: unknown): AbortSignal | undefined {
  if (signal === undefined) return undefined;
  if (!(signal instanceof AbortSignal)) fail('ERR_ARGUMENT', where, 'options.signal', 'an AbortSignal', signal);
  return signal;
}

/** The rejection of a call cancelled by its signal before it started. */
function abortError(where: string, signal: AbortSignal): LoraError {
  const err = new LoraError('ERR_ARGUMENT', `${where}: expected options.signal not to abort before the call started but received an abort; the call did not run`);
  err.name = 'AbortError';
  err.cause = signal.reason;
  return err;
}
