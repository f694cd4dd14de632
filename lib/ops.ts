// ops: the LoRA kernels as plain functions, for other frameworks that keep their own parameters and
// autograd (and their own memory: a Float32Array is taken as it is, and results can be written into
// the caller's tensors). Fused or PEFT's order, optional dropout on the LoRA path; dA and dB are not
// accumulated. Dimensions come from the Tensors' shapes, or from M, I, O, r for Float32Arrays. They
// run where x lives, on a backend with ops kernels (the CPU for now).
import type { OpsBackward, OpsForward, OpsKernels, Operand, Placement } from './backends/backend';
import { Call, run, runAsync } from './call';
import { fail, said } from './errors';
import { backendWith, exact, output, Reads, TensorLike } from './operands';
import { Tensor } from './tensor';
import { checkBoolean, checkDim, checkDropout, checkFiniteNumber, checkKeys, checkOptions, checkSeed, OptionKeys, optionKeys } from './validate';

export interface LoraForwardInput {
  x: TensorLike;        // (M, I)
  weight: TensorLike;   // (O, I), or (I, O) with fanInFanOut
  bias?: TensorLike | null;  // (O)
  A: TensorLike;        // (I, r)
  B: TensorLike;        // (r, O)
  scaling: number;
  M?: number; I?: number; O?: number; r?: number;
  /** false: PEFT's unfused order (for comparisons). Default true. */
  fused?: boolean;
  /**
   * true: weight is stored (I, O), (fan_in, fan_out), as tf.layers.dense keeps its kernel (PEFT's
   * fan_in_fan_out); false (default): (O, I), as nn.Linear. Read in place either way.
   */
  fanInFanOut?: boolean;
  /** Dropout on the LoRA path's input; the result then carries its mask and xDrop for loraBackward. */
  dropout?: DropoutOptions;
  /** Where to write the results instead of new tensors: of their shapes, where x lives, sharing no memory with an input. */
  out?: { y?: Tensor; s?: Tensor; xDrop?: Tensor; mask?: Uint8Array };
}

/** x̃ = x ⊙ mask / (1 − p), the mask a pure function of (seed, step, element): a new step (or seed) per call. */
export interface DropoutOptions {
  p: number;
  seed: number;
  /** Default 0. */
  step?: number;
}

export interface LoraForwardResult {
  y: Tensor;       // (M, O)
  s: Tensor;       // (M, r): x̃·A, for loraBackward
  /** (M, I) x̃, with dropout; null without. */
  xDrop: Tensor | null;
  /** (M, I), 1 = kept, with dropout; null without. */
  mask: Uint8Array | null;
}

export interface LoraBackwardInput {
  x: TensorLike;        // (M, I)
  s: TensorLike;        // (M, r), from loraForward
  dy: TensorLike;       // (M, O)
  weight: TensorLike;   // (O, I), or (I, O) with fanInFanOut
  A: TensorLike;        // (I, r)
  B: TensorLike;        // (r, O)
  scaling: number;
  M?: number; I?: number; O?: number; r?: number;
  fused?: boolean;
  fanInFanOut?: boolean;
  /** The forward's dropout: its p, and the mask and xDrop it returned. */
  dropout?: { p: number; mask: Uint8Array; xDrop: TensorLike };
  /** false skips dx (returned as null). Default true. */
  inputGrad?: boolean;
  out?: { dx?: Tensor; dA?: Tensor; dB?: Tensor };
}

const FORWARD_KEYS = optionKeys<LoraForwardInput>({
  x: true, weight: true, bias: true, A: true, B: true, scaling: true, M: true, I: true, O: true, r: true, fused: true,
  fanInFanOut: true, dropout: true, out: true,
});
const BACKWARD_KEYS = optionKeys<LoraBackwardInput>({
  x: true, s: true, dy: true, weight: true, A: true, B: true, scaling: true, M: true, I: true, O: true, r: true, fused: true,
  fanInFanOut: true, dropout: true, inputGrad: true, out: true,
});
const DROPOUT_FORWARD_KEYS = optionKeys<DropoutOptions>({ p: true, seed: true, step: true });
const DROPOUT_BACKWARD_KEYS = optionKeys<NonNullable<LoraBackwardInput['dropout']>>({ p: true, mask: true, xDrop: true });
const OUT_FORWARD_KEYS = optionKeys<NonNullable<LoraForwardInput['out']>>({ y: true, s: true, xDrop: true, mask: true });
const OUT_BACKWARD_KEYS = optionKeys<NonNullable<LoraBackwardInput['out']>>({ dx: true, dA: true, dB: true });

type Dims = { M: number; I: number; O: number; r: number };
type Layout = [keyof Dims, keyof Dims] | [keyof Dims];

// Each named operand's shape in terms of the four dimensions; the weight's depends on fanInFanOut.
const LAYOUTS: Record<string, Layout> = {
  x: ['M', 'I'], bias: ['O'], A: ['I', 'r'], B: ['r', 'O'], s: ['M', 'r'], dy: ['M', 'O'], xDrop: ['M', 'I'],
};
const layoutOf = (name: string, fanInFanOut: boolean): Layout => (name === 'weight' ? (fanInFanOut ? ['I', 'O'] : ['O', 'I']) : LAYOUTS[name]);

/** Reads M, I, O, r from the Tensors' shapes and the explicit numbers, checking they agree. */
function dims(where: string, input: Record<string, unknown>, operands: Record<string, unknown>, fanInFanOut: boolean): Dims {
  const found: Partial<Dims> = {};
  const set = (k: keyof Dims, v: number, from: string) => {
    if (found[k] !== undefined && found[k] !== v) fail('ERR_SHAPE', where, from, `${k} = ${found[k]} (as elsewhere)`, said(`${k} = ${v}`));
    found[k] = v;
  };
  for (const k of ['M', 'I', 'O', 'r'] as const) if (input[k] !== undefined) set(k, checkDim(where, k, input[k], k === 'r' ? 1 : 0), k);
  for (const [name, v] of Object.entries(operands)) {
    if (!(v instanceof Tensor)) continue;
    const layout = layoutOf(name, fanInFanOut);
    if (v.shape.length !== layout.length) fail('ERR_SHAPE', where, name, `a ${layout.length}-d tensor (${layout.join(', ')})`, said(`shape [${v.shape.join(', ')}]`));
    layout.forEach((k, i) => set(k, v.shape[i], name));
  }
  for (const k of ['M', 'I', 'O', 'r'] as const) {
    if (found[k] === undefined) fail('ERR_SHAPE', where, k, `${k} from a Tensor's shape or given as a number`, undefined);
    checkDim(where, k, found[k], k === 'r' ? 1 : 0);  // values read from a Tensor's shape are checked here
  }
  return found as Dims;
}

/**
 * The input object itself: only fields the op takes (a misspelt `bais` would otherwise drop the bias
 * silently), its required operands present, before any dimension is inferred.
 */
function inputObject(where: string, input: unknown, keys: OptionKeys<object>, required: string[]): Record<string, unknown> {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) fail('ERR_ARGUMENT', where, 'input', 'an object of operands', input);
  checkKeys(where, 'input', input, keys);
  const inp = input as Record<string, unknown>;
  for (const name of required) if (inp[name] === undefined || inp[name] === null) fail('ERR_ARGUMENT', where, name, 'a Tensor or Float32Array', inp[name]);
  return inp;
}

function flag(where: string, inp: Record<string, unknown>, name: string, fallback: boolean): boolean {
  return inp[name] === undefined ? fallback : checkBoolean(where, name, inp[name]);
}

/** Where the op runs (x's backend, which must have ops kernels), checked before anything is allocated. */
const opsOf = (where: string, x: unknown) => backendWith(where, 'x', x, (b) => b.ops, 'ops.*');

/** The checked parts every call shares: operands by name, dimensions, placement and kernels. */
function prepare(where: string, inp: Record<string, unknown>, operands: Record<string, unknown>) {
  const fanInFanOut = flag(where, inp, 'fanInFanOut', false);
  const d = dims(where, inp, operands, fanInFanOut);
  const { on, kernels } = opsOf(where, inp.x);
  const operand = (name: string): Operand => exact(where, name, operands[name], layoutOf(name, fanInFanOut).map((k) => d[k]), on);
  const scaling = checkFiniteNumber(where, 'scaling', inp.scaling);
  return { d, on, kernels, operand, fanInFanOut, scaling, fused: flag(where, inp, 'fused', true) };
}

/** A result tensor: out[name] when given, else a new one. */
function result(where: string, out: Record<string, unknown>, name: string, shape: number[], on: Placement, reads: Reads) {
  return output(where, out[name], shape, on, reads, `out.${name}`);
}

/** The mask: out's (M·I bytes, apart from every float operand) or a new one. */
function maskOut(where: string, arg: string, given: unknown, n: number, apart: Reads): Uint8Array {
  if (given === undefined) return new Uint8Array(n);
  return checkMask(where, arg, given, n, apart);
}

function checkMask(where: string, arg: string, mask: unknown, n: number, apart: Reads): Uint8Array {
  if (!(mask instanceof Uint8Array)) fail('ERR_DTYPE', where, arg, 'a Uint8Array', mask);
  if (mask.length !== n) fail('ERR_SHAPE', where, arg, `${n} elements (M·I)`, said(`${mask.length}`));
  for (const [name, o] of apart) {
    const h = o?.storage.hostArray;
    if (h && h.buffer === mask.buffer && h.byteOffset < mask.byteOffset + mask.byteLength && mask.byteOffset < h.byteOffset + h.byteLength && n > 0) {
      fail('ERR_ARGUMENT', where, arg, `memory apart from ${name}`, said(`bytes that overlap ${name}`));
    }
  }
  return mask;
}

function forwardCall(where: string, input: LoraForwardInput): { kernels: OpsKernels; call: Call<OpsForward, LoraForwardResult> } {
  const inp = inputObject(where, input, FORWARD_KEYS, ['x', 'weight', 'A', 'B']);
  const out = checkOptions(where, inp.out, OUT_FORWARD_KEYS, 'out') as Record<string, unknown>;
  const drop = inp.dropout === undefined ? undefined : checkOptions(where, inp.dropout, DROPOUT_FORWARD_KEYS, 'dropout');
  const p = drop === undefined ? 0 : checkDropout(where, drop.p);
  const hasBias = inp.bias !== undefined && inp.bias !== null;
  const { d, on, kernels, operand, fanInFanOut, scaling, fused } = prepare(where, inp, { x: inp.x, weight: inp.weight, ...(hasBias ? { bias: inp.bias } : {}), A: inp.A, B: inp.B });
  const x = operand('x'), W = operand('weight'), bias = hasBias ? operand('bias') : null, A = operand('A'), B = operand('B');
  const reads: Reads = [['x', x], ['weight', W], ['bias', bias], ['A', A], ['B', B]];
  const y = result(where, out, 'y', [d.M, d.O], on, reads);
  const s = result(where, out, 's', [d.M, d.r], on, [...reads, ['out.y', y.op]]);
  const dropping = Math.fround(p) > 0;
  if (!dropping && (out.xDrop !== undefined || out.mask !== undefined)) fail('ERR_ARGUMENT', where, 'out', 'no xDrop or mask without dropout', said('one of them'));
  let dropout: OpsForward['dropout'] = null, xDrop: Tensor | null = null, mask: Uint8Array | null = null;
  if (dropping) {
    const seed = checkSeed(where, drop!.seed);
    const step = drop!.step === undefined ? 0 : checkSeed(where, drop!.step);
    const xd = result(where, out, 'xDrop', [d.M, d.I], on, [...reads, ['out.y', y.op], ['out.s', s.op]]);
    mask = maskOut(where, 'out.mask', out.mask, d.M * d.I, [...reads, ['out.y', y.op], ['out.s', s.op], ['out.xDrop', xd.op]]);
    xDrop = xd.tensor;
    dropout = { p, seed, step, mask, xDrop: xd.op };
  }
  const c: OpsForward = { where, ...d, x, W, fanInFanOut, bias, A, B, scaling, fused, dropout, s: s.op, y: y.op };
  return { kernels, call: { c, result: { y: y.tensor, s: s.tensor, xDrop, mask } } };
}

function backwardCall(where: string, input: LoraBackwardInput): { kernels: OpsKernels; call: Call<OpsBackward, { dx: Tensor | null; dA: Tensor; dB: Tensor }> } {
  const inp = inputObject(where, input, BACKWARD_KEYS, ['x', 's', 'dy', 'weight', 'A', 'B']);
  const out = checkOptions(where, inp.out, OUT_BACKWARD_KEYS, 'out') as Record<string, unknown>;
  const drop = inp.dropout === undefined ? undefined : checkOptions(where, inp.dropout, DROPOUT_BACKWARD_KEYS, 'dropout');
  const p = drop === undefined ? 0 : checkDropout(where, drop.p);
  const dropping = Math.fround(p) > 0;
  const { d, on, kernels, operand, fanInFanOut, scaling, fused } = prepare(where, inp, {
    x: inp.x, s: inp.s, dy: inp.dy, weight: inp.weight, A: inp.A, B: inp.B, ...(dropping ? { xDrop: drop!.xDrop } : {}),
  });
  const x = operand('x'), s = operand('s'), dy = operand('dy'), W = operand('weight'), A = operand('A'), B = operand('B');
  const xDrop = dropping ? operand('xDrop') : null;
  const reads: Reads = [['x', x], ['s', s], ['dy', dy], ['weight', W], ['A', A], ['B', B], ['dropout.xDrop', xDrop]];
  const inputGrad = flag(where, inp, 'inputGrad', true);
  if (!inputGrad && out.dx !== undefined) fail('ERR_ARGUMENT', where, 'out.dx', 'no dx with inputGrad: false', out.dx);
  const dA = result(where, out, 'dA', [d.I, d.r], on, reads);
  const dB = result(where, out, 'dB', [d.r, d.O], on, [...reads, ['out.dA', dA.op]]);
  const dx = inputGrad ? result(where, out, 'dx', [d.M, d.I], on, [...reads, ['out.dA', dA.op], ['out.dB', dB.op]]) : null;
  // The mask is only read here: it must stay apart from what the kernel writes.
  const dropout: OpsBackward['dropout'] = xDrop === null ? null
    : { p, xDrop, mask: checkMask(where, 'dropout.mask', drop!.mask, d.M * d.I, [['out.dA', dA.op], ['out.dB', dB.op], ['out.dx', dx?.op]]) };
  const c: OpsBackward = { where, ...d, x, s, dy, W, fanInFanOut, A, B, scaling, fused, dropout, dx: dx?.op ?? null, dA: dA.op, dB: dB.op };
  return { kernels, call: { c, result: { dx: dx?.tensor ?? null, dA: dA.tensor, dB: dB.tensor } } };
}

/** y = x·Wᵀ + b + scaling·(x̃·A)·B (x·W for W stored (I, O)), and s = x̃·A for backward. */
export function loraForward(input: LoraForwardInput): LoraForwardResult {
  const { kernels, call } = forwardCall('ops.loraForward', input);
  return run(call, (c) => kernels.forward(c));
}

export async function loraForwardAsync(input: LoraForwardInput): Promise<LoraForwardResult> {
  const { kernels, call } = forwardCall('ops.loraForwardAsync', input);
  return runAsync(() => call, (c) => kernels.forwardAsync(c));
}

/** dx = dy·W + (ds·Aᵀ, masked like x̃), dA = x̃ᵀ·ds, dB = scaling·sᵀ·dy, with ds = scaling·dy·Bᵀ. */
export function loraBackward(input: LoraBackwardInput): { dx: Tensor | null; dA: Tensor; dB: Tensor } {
  const { kernels, call } = backwardCall('ops.loraBackward', input);
  return run(call, (c) => kernels.backward(c));
}

export async function loraBackwardAsync(input: LoraBackwardInput): Promise<{ dx: Tensor | null; dA: Tensor; dB: Tensor }> {
  const { kernels, call } = backwardCall('ops.loraBackwardAsync', input);
  return runAsync(() => call, (c) => kernels.backwardAsync(c));
}
