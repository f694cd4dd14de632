// Optimizers over trainable parameters (Tensors with a .grad, e.g. layer.parameters()) and gradient
// clipping, with PyTorch's semantics (torch.optim.SGD, torch.optim.AdamW,
// torch.nn.utils.clip_grad_norm_). Each parameter is stepped by its own backend's kernel, in place,
// one call per parameter tensor, with its state (exp_avg, exp_avg_sq, momentum_buffer) allocated once
// where it lives; a list may mix backends. The objects a step passes around are built once too, so
// step() allocates nothing.
//
// Gradients accumulate: backward() adds into .grad, step() reads whatever is there, zeroGrad()
// clears it. So two backward calls before one step() train on the summed gradient. Each step marks
// the parameter written, so a layer that keeps a derived copy of it (W_ext) refreshes it.
// clipGradNorm takes every gradient through a host view (no copy on the CPU; they are r·(I + O)
// elements per layer).
import './portable-types';
import type { AdamWStep, OptimizerKernels, SGDStep, TensorStorage } from './backends/backend';
import { backendFor, hostKernels } from './backends/registry';
import { fail, said } from './errors';
import { gradStorage, paramStorage, zeroGrads } from './grad';
import { backendWith } from './operands';
import { placementOf } from './placement';
import { Tensor } from './tensor';
import { checkBoolean, checkOptions, isInt, MAX_ELEMENTS, optionKeys, shapeString } from './validate';

export interface SGDOptions {
  /** Learning rate, a finite number > 0. Required, as there is no good default for SGD. */
  lr: number;
  /** Momentum factor >= 0. Default 0 (plain SGD, no state). */
  momentum?: number;
  /** Dampening of the momentum's new term, finite. Default 0. */
  dampening?: number;
  /** L2 penalty added to the gradient (coupled, as torch.optim.SGD), >= 0. Default 0. */
  weightDecay?: number;
  /** Nesterov momentum; needs momentum > 0 and dampening 0. Default false. */
  nesterov?: boolean;
}
export const SGD_KEYS = optionKeys<SGDOptions>({ lr: true, momentum: true, dampening: true, weightDecay: true, nesterov: true });

export interface AdamWOptions {
  /** Learning rate, a finite number > 0. Default 1e-3. */
  lr?: number;
  /** Decay rates of the first and second moment estimates, each in [0, 1). Default [0.9, 0.999]. */
  betas?: readonly [number, number];
  /** Added to the denominator, > 0. Default 1e-8. */
  eps?: number;
  /** Decoupled weight decay (p ← p·(1 − lr·wd) before the Adam update), >= 0. Default 1e-2. */
  weightDecay?: number;
}
export const ADAMW_KEYS = optionKeys<AdamWOptions>({ lr: true, betas: true, eps: true, weightDecay: true });

// Type aliases, not interfaces: they are then assignable to Record<string, unknown> (the hyper of a
// generic state dict, as saveAdapter stores it).
export type SGDHyper = { lr: number; momentum: number; dampening: number; weightDecay: number; nesterov: boolean };
export type AdamWHyper = { lr: number; betas: [number, number]; eps: number; weightDecay: number };

/**
 * What an optimizer needs to resume: JSON-able scalars plus Float32Arrays (copies, not views of the
 * live state), keyed `param.<i>.<name>` by the parameter's position in the list the optimizer was
 * built with. `step` is the number of step() calls made.
 */
export interface OptimizerState<K extends string = string, H extends object = Record<string, unknown>> {
  kind: K;
  step: number;
  hyper: H;
  tensors: Record<string, Float32Array>;
}
export type SGDState = OptimizerState<'sgd', SGDHyper>;
export type AdamWState = OptimizerState<'adamw', AdamWHyper>;

export interface ClipGradNormOptions {
  /** Throw ERR_NOT_FINITE (leaving the gradients unchanged) when the total norm is NaN or infinite. Default false. */
  errorIfNonfinite?: boolean;
}
const CLIP_KEYS = optionKeys<ClipGradNormOptions>({ errorIfNonfinite: true });

function checkLr(where: string, arg: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) fail('ERR_ARGUMENT', where, arg, 'a finite number > 0', v);
  return v;
}

function checkNonNegative(where: string, arg: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) fail('ERR_ARGUMENT', where, arg, 'a finite number >= 0', v);
  return v;
}

function checkBeta(where: string, arg: string, v: unknown): number {
  if (typeof v !== 'number' || !(v >= 0 && v < 1)) fail('ERR_ARGUMENT', where, arg, 'a number in [0, 1)', v);
  return v;
}

/** The constructor's options, or a state dict's hyper (`arg` names which). */
function resolveSGD(where: string, options: unknown, arg = 'options'): SGDHyper {
  const o = checkOptions(where, options, SGD_KEYS, arg);
  const lr = checkLr(where, `${arg}.lr`, o.lr);
  const momentum = o.momentum === undefined ? 0 : checkNonNegative(where, `${arg}.momentum`, o.momentum);
  let dampening = 0;
  if (o.dampening !== undefined) {
    if (typeof o.dampening !== 'number' || !Number.isFinite(o.dampening)) fail('ERR_ARGUMENT', where, `${arg}.dampening`, 'a finite number', o.dampening);
    dampening = o.dampening;
  }
  const weightDecay = o.weightDecay === undefined ? 0 : checkNonNegative(where, `${arg}.weightDecay`, o.weightDecay);
  const nesterov = o.nesterov === undefined ? false : checkBoolean(where, `${arg}.nesterov`, o.nesterov);
  if (nesterov && (momentum <= 0 || dampening !== 0)) {
    fail('ERR_ARGUMENT', where, `${arg}.nesterov`, 'momentum > 0 and dampening 0 with nesterov: true', said(`momentum ${momentum}, dampening ${dampening}`));
  }
  return { lr, momentum, dampening, weightDecay, nesterov };
}

function resolveAdamW(where: string, options: unknown, arg = 'options'): AdamWHyper {
  const o = checkOptions(where, options, ADAMW_KEYS, arg);
  const lr = o.lr === undefined ? 1e-3 : checkLr(where, `${arg}.lr`, o.lr);
  let betas: [number, number] = [0.9, 0.999];
  if (o.betas !== undefined) {
    if (!Array.isArray(o.betas) || o.betas.length !== 2) fail('ERR_ARGUMENT', where, `${arg}.betas`, 'an array of two numbers in [0, 1)', o.betas);
    betas = [checkBeta(where, `${arg}.betas[0]`, o.betas[0]), checkBeta(where, `${arg}.betas[1]`, o.betas[1])];
  }
  const eps = o.eps === undefined ? 1e-8 : checkLr(where, `${arg}.eps`, o.eps);
  const weightDecay = o.weightDecay === undefined ? 1e-2 : checkNonNegative(where, `${arg}.weightDecay`, o.weightDecay);
  return { lr, betas, eps, weightDecay };
}

interface ParamCheck {
  /** Refuse an empty list (an optimizer with nothing to train is a mistake). */
  allowEmpty: boolean;
  /** Skip parameters whose .grad is null instead of refusing them (clip_grad_norm_ does). */
  skipNoGrad: boolean;
}

/**
 * The parameter list: an array of live Tensors, each once, each with a .grad Tensor of its own shape.
 * A repeated tensor is refused: it would be updated (or scaled) twice per step.
 */
function checkParameters(where: string, params: unknown, how: ParamCheck): Tensor[] {
  if (!Array.isArray(params)) fail('ERR_ARGUMENT', where, 'params', 'an array of Tensors with a .grad (e.g. layer.parameters())', params);
  if (params.length === 0 && !how.allowEmpty) fail('ERR_ARGUMENT', where, 'params', 'at least one parameter', said('an empty array'));
  const seen = new Set<Tensor>();
  const out: Tensor[] = [];
  params.forEach((p: unknown, i: number) => {
    const arg = `params[${i}]`;
    if (!(p instanceof Tensor)) fail('ERR_ARGUMENT', where, arg, 'a Tensor', p);
    paramStorage(where, arg, p);  // ERR_DISPOSED now rather than at the first step
    if (seen.has(p)) fail('ERR_ARGUMENT', where, arg, 'each parameter once', said(`a repeat of an earlier entry (shape ${shapeString(p.shape)})`));
    seen.add(p);
    if (p.grad === null && how.skipNoGrad) return;
    gradStorage(where, arg, p);
    out.push(p);
  });
  return out;
}

/**
 * What SGD and AdamW share: the parameter list and each parameter's kernels, the step count,
 * zeroGrad, dispose, and the checks of a state dict. Subclasses name their state buffers and run
 * their kernel.
 */
abstract class Optimizer<K extends string, H extends object> {
  abstract readonly kind: K;
  protected readonly params: Tensor[];
  protected hyperparams: H;
  /** Each parameter's backend's optimizer kernels, chosen once. */
  protected readonly kernels: OptimizerKernels[];
  protected steps = 0;
  #disposed = false;
  readonly #bufs: Array<{ param: TensorStorage | null; grad: TensorStorage | null }>;

  protected constructor(where: string, params: unknown, hyper: H) {
    this.params = checkParameters(where, params, { allowEmpty: false, skipNoGrad: false });
    this.hyperparams = hyper;
    this.kernels = this.params.map((p) => backendFor(placementOf(p)).optimizers);
    this.#bufs = this.params.map(() => ({ param: null, grad: null }));
  }

  /** The number of step() calls made (restored by loadStateDict). */
  get stepCount(): number {
    return this.steps;
  }

  /** The learning rate; set it between steps for a schedule (a finite number > 0). */
  get lr(): number {
    return (this.hyperparams as { lr: number }).lr;
  }

  set lr(value: number) {
    (this.hyperparams as { lr: number }).lr = checkLr(`${this.name}.lr`, 'lr', value);
  }

  /** The hyperparameters in use (a copy). */
  get hyper(): H {
    return structuredClone(this.hyperparams);
  }

  /** Sets every parameter's gradient to zero. */
  zeroGrad(): void {
    const where = `${this.name}.zeroGrad`;
    this.checkLive(where);
    zeroGrads(where, this.params, (i) => `params[${i}]`);
  }

  /** Releases the optimizer's state; the parameters belong to their layers and are left alone. */
  dispose(): void {
    this.#disposed = true;
    this.releaseState();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** A snapshot of everything needed to resume: copies, so later steps leave it unchanged. */
  stateDict(): OptimizerState<K, H> {
    this.checkLive(`${this.name}.stateDict`);
    const tensors: Record<string, Float32Array> = {};
    for (const [key, buf] of this.stateBuffers()) tensors[key] = buf.hostCopy(`${this.name}.stateDict`);
    return { kind: this.kind, step: this.steps, hyper: structuredClone(this.hyperparams), tensors };
  }

  /**
   * Restores a stateDict() (of this kind, for parameters of the same shapes in the same order):
   * the step count, the hyperparameters (as torch's load_state_dict does) and the state tensors,
   * copied in. Everything is checked before anything changes, so a refused dict leaves the optimizer
   * as it was.
   */
  loadStateDict(state: OptimizerState<string, object>): void {
    const where = `${this.name}.loadStateDict`;
    this.checkLive(where);
    if (state === null || typeof state !== 'object') fail('ERR_ARGUMENT', where, 'state', 'an optimizer state dict', state);
    const s = state as Partial<OptimizerState>;
    if (s.kind !== this.kind) fail('ERR_ARGUMENT', where, 'state.kind', `'${this.kind}'`, s.kind);
    const step = s.step;
    if (!isInt(step) || step < 0 || step > MAX_ELEMENTS) fail('ERR_ARGUMENT', where, 'state.step', 'an integer >= 0', step);
    const hyper = this.resolveHyper(where, s.hyper);
    const tensors = s.tensors;
    if (tensors === null || typeof tensors !== 'object') fail('ERR_ARGUMENT', where, 'state.tensors', 'an object of Float32Arrays', tensors);
    const expected = this.stateNames(hyper);
    const keys = new Set(Object.keys(tensors));
    this.params.forEach((p, i) => {
      for (const name of expected) {
        const key = `param.${i}.${name}`;
        const t = (tensors as Record<string, unknown>)[key];
        if (!keys.delete(key)) fail('ERR_ARGUMENT', where, `state.tensors['${key}']`, `a Float32Array of ${p.size} elements`, undefined);
        if (!(t instanceof Float32Array)) {
          fail(ArrayBuffer.isView(t) ? 'ERR_DTYPE' : 'ERR_ARGUMENT', where, `state.tensors['${key}']`, 'a Float32Array', t);
        }
        if (t.length !== p.size) {
          fail('ERR_SHAPE', where, `state.tensors['${key}']`, `${p.size} elements (params[${i}] has shape ${shapeString(p.shape)})`, said(`${t.length} elements`));
        }
      }
    });
    if (keys.size > 0) {
      const extra = [...keys][0];
      fail('ERR_ARGUMENT', where, 'state.tensors', `only the keys of ${this.params.length} parameter(s) (${expected.map((n) => `param.<i>.${n}`).join(', ') || 'none'})`, said(`key '${extra}'`));
    }
    // All checked: commit.
    this.hyperparams = hyper;
    this.steps = step;
    this.allocateState();
    for (const [key, buf] of this.stateBuffers()) buf.write((tensors as Record<string, Float32Array>)[key], where);
  }

  protected abstract get name(): string;
  /** The state buffer names per parameter for these hyperparameters (e.g. exp_avg, exp_avg_sq). */
  protected abstract stateNames(hyper: H): string[];
  /** Checks and completes hyperparameters (the constructor's option checks). */
  protected abstract resolveHyper(where: string, hyper: unknown): H;
  /** (Re)allocates state buffers to match the current hyperparameters, keeping the ones that fit. */
  protected abstract allocateState(): void;
  protected abstract releaseState(): void;
  /** [key, buffer] for every state buffer, keyed as in stateDict().tensors. */
  protected abstract stateBuffers(): Array<[string, TensorStorage]>;

  protected checkLive(where: string): void {
    if (this.#disposed) fail('ERR_DISPOSED', where, '', 'a live optimizer', said('a disposed one'));
  }

  /** Every parameter's storage and gradient, checked before the first update so a bad one changes nothing. */
  protected buffers(where: string): ReadonlyArray<{ param: TensorStorage; grad: TensorStorage }> {
    this.checkLive(where);
    this.params.forEach((p, i) => {
      const b = this.#bufs[i];  // reused: a step allocates no JS objects either
      b.param = paramStorage(where, `params[${i}]`, p);
      b.grad = gradStorage(where, `params[${i}]`, p);
    });
    return this.#bufs as ReadonlyArray<{ param: TensorStorage; grad: TensorStorage }>;
  }

  /** A zeroed float32 state buffer for params[i], where it lives. */
  protected newState(i: number): TensorStorage {
    const p = this.params[i];
    return backendFor(placementOf(p)).alloc(this.name, `the state of params[${i}]`, 'float32', p.size, true);
  }
}

/**
 * Stochastic gradient descent with momentum, as torch.optim.SGD:
 *   d = g + weightDecay·p
 *   buf = d on the first step, then momentum·buf + (1 − dampening)·d
 *   d = nesterov ? d + momentum·buf : buf        (with momentum > 0)
 *   p = p − lr·d
 */
export class SGD extends Optimizer<'sgd', SGDHyper> {
  readonly kind = 'sgd' as const;
  #buffers: TensorStorage[] = [];  // momentum_buffer per parameter, or none when momentum is 0
  readonly #sgd: Array<NonNullable<OptimizerKernels['sgd']>>;
  readonly #h: SGDStep = { lr: 0, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false, firstStep: true };

  constructor(params: Tensor[], options: SGDOptions) {
    super('SGD', params, resolveSGD('SGD', options));
    this.#sgd = this.params.map((p, i) => backendWith('SGD', `params[${i}]`, p, (b) => b.optimizers.sgd, 'SGD', 'use AdamW, or train there').kernels);
    this.allocateState();
  }

  step(): void {
    const bufs = this.buffers('SGD.step');
    const h = this.hyperparams, s = this.#h;
    s.lr = h.lr; s.momentum = h.momentum; s.dampening = h.dampening; s.weightDecay = h.weightDecay; s.nesterov = h.nesterov;
    // The momentum buffer is initialised by the first step, as torch's (its state starts as None).
    s.firstStep = this.steps === 0;
    this.steps++;
    bufs.forEach(({ param, grad }, i) => {
      this.#sgd[i](param, grad, h.momentum !== 0 ? this.#buffers[i] : null, s);
      param.markWritten();
    });
  }

  protected get name(): string {
    return 'SGD';
  }

  protected stateNames(hyper: SGDHyper): string[] {
    return hyper.momentum !== 0 ? ['momentum_buffer'] : [];
  }

  protected resolveHyper(where: string, hyper: unknown): SGDHyper {
    return resolveSGD(where, hyper, 'state.hyper');
  }

  protected allocateState(): void {
    if (this.hyperparams.momentum === 0) this.releaseState();
    else if (this.#buffers.length === 0) this.#buffers = this.params.map((_, i) => this.newState(i));
  }

  protected releaseState(): void {
    for (const b of this.#buffers) b.release();
    this.#buffers = [];
  }

  protected stateBuffers(): Array<[string, TensorStorage]> {
    return this.#buffers.map((b, i) => [`param.${i}.momentum_buffer`, b]);
  }
}

/**
 * Adam with decoupled weight decay, as torch.optim.AdamW (step t counts from 1):
 *   p = p·(1 − lr·weightDecay)
 *   m = β1·m + (1 − β1)·g          v = β2·v + (1 − β2)·g²
 *   p = p − lr/(1 − β1^t) · m / (√v / √(1 − β2^t) + eps)
 */
export class AdamW extends Optimizer<'adamw', AdamWHyper> {
  readonly kind = 'adamw' as const;
  #expAvg: TensorStorage[] = [];
  #expAvgSq: TensorStorage[] = [];
  readonly #h: AdamWStep = { lr: 0, beta1: 0, beta2: 0, eps: 0, weightDecay: 0, step: 0 };

  constructor(params: Tensor[], options?: AdamWOptions) {
    super('AdamW', params, resolveAdamW('AdamW', options));
    this.allocateState();
  }

  step(): void {
    const bufs = this.buffers('AdamW.step');
    const h = this.hyperparams, s = this.#h;
    s.lr = h.lr; s.beta1 = h.betas[0]; s.beta2 = h.betas[1]; s.eps = h.eps; s.weightDecay = h.weightDecay; s.step = ++this.steps;
    bufs.forEach(({ param, grad }, i) => {
      this.kernels[i].adamw(param, grad, this.#expAvg[i], this.#expAvgSq[i], s);
      param.markWritten();
    });
  }

  protected get name(): string {
    return 'AdamW';
  }

  protected stateNames(): string[] {
    return ['exp_avg', 'exp_avg_sq'];
  }

  protected resolveHyper(where: string, hyper: unknown): AdamWHyper {
    return resolveAdamW(where, hyper, 'state.hyper');
  }

  protected allocateState(): void {
    if (this.#expAvg.length === 0) {
      this.#expAvg = this.params.map((_, i) => this.newState(i));
      this.#expAvgSq = this.params.map((_, i) => this.newState(i));
    }
  }

  protected releaseState(): void {
    for (const b of [...this.#expAvg, ...this.#expAvgSq]) b.release();
    this.#expAvg = [];
    this.#expAvgSq = [];
  }

  protected stateBuffers(): Array<[string, TensorStorage]> {
    return this.#expAvg.flatMap((m, i): Array<[string, TensorStorage]> => [
      [`param.${i}.exp_avg`, m],
      [`param.${i}.exp_avg_sq`, this.#expAvgSq[i]],
    ]);
  }
}

/**
 * Clips gradients by their total L2 norm, as torch.nn.utils.clip_grad_norm_: the norm over all
 * gradients together is computed natively in double; when maxNorm / (norm + 1e-6) < 1 every gradient
 * is multiplied by that factor. Returns the norm before clipping. Parameters whose .grad is null are
 * skipped (as torch skips grad None); an empty list gives 0. A NaN or infinite norm follows torch
 * (the gradients become NaN) unless errorIfNonfinite, which throws ERR_NOT_FINITE and changes nothing.
 */
export function clipGradNorm(params: Tensor[], maxNorm: number, options?: ClipGradNormOptions): number {
  const where = 'clipGradNorm';
  const ps = checkParameters(where, params, { allowEmpty: true, skipNoGrad: true });
  if (typeof maxNorm !== 'number' || !Number.isFinite(maxNorm) || maxNorm < 0) fail('ERR_ARGUMENT', where, 'maxNorm', 'a finite number >= 0', maxNorm);
  const opts = checkOptions(where, options, CLIP_KEYS);
  const errorIfNonfinite = opts.errorIfNonfinite === undefined ? false : checkBoolean(where, 'options.errorIfNonfinite', opts.errorIfNonfinite);
  // Host views: the gradients themselves on the CPU, downloads from a device, written back only when
  // scaled (a write of a storage's own array copies nothing).
  const storages = ps.map((p) => p.grad!.storage(where, `the grad of a ${shapeString(p.shape)} parameter`));
  const grads = storages.map((g) => g.hostView(where));
  const norm = hostKernels.clipGradNorm(grads, maxNorm, errorIfNonfinite);
  if (!(maxNorm / (norm + 1e-6) >= 1)) storages.forEach((g, i) => g.write(grads[i], where));  // scaled (or NaN), as the kernel did
  return norm;
}
