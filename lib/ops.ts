// ops: the LoRA kernels as plain functions, for other frameworks that keep their own parameters and
// autograd (and their own memory: a Float32Array is taken as it is). Fused or PEFT's order, no dropout
// (apply it to x yourself); results are new tensors and dA, dB are not accumulated. Dimensions come
// from the Tensors' shapes, or from M, I, O, r for Float32Arrays. They run where x lives, on a backend
// with ops kernels (the CPU for now).
import type { OpsBackward, OpsForward, OpsKernels, Operand, Placement } from './backends/backend';
import { Call, run, runAsync } from './call';
import { fail, said } from './errors';
import { backendWith, exact, output, TensorLike } from './operands';
import { Tensor } from './tensor';
import { checkBoolean, checkDim, checkFiniteNumber, checkKeys, OptionKeys, optionKeys } from './validate';

export interface LoraForwardInput {
  x: TensorLike;        // (M, I)
  weight: TensorLike;   // (O, I)
  bias?: TensorLike | null;  // (O)
  A: TensorLike;        // (I, r)
  B: TensorLike;        // (r, O)
  scaling: number;
  M?: number; I?: number; O?: number; r?: number;
  /** false: PEFT's unfused order (for comparisons). Default true. */
  fused?: boolean;
}
const FORWARD_KEYS = optionKeys<LoraForwardInput>({
  x: true, weight: true, bias: true, A: true, B: true, scaling: true, M: true, I: true, O: true, r: true, fused: true,
});

export interface LoraBackwardInput {
  x: TensorLike;        // (M, I)
  s: TensorLike;        // (M, r), from loraForward
  dy: TensorLike;       // (M, O)
  weight: TensorLike;   // (O, I)
  A: TensorLike;        // (I, r)
  B: TensorLike;        // (r, O)
  scaling: number;
  M?: number; I?: number; O?: number; r?: number;
  fused?: boolean;
  /** false skips dx (returned as null). Default true. */
  inputGrad?: boolean;
}
const BACKWARD_KEYS = optionKeys<LoraBackwardInput>({
  x: true, s: true, dy: true, weight: true, A: true, B: true, scaling: true, M: true, I: true, O: true, r: true, fused: true, inputGrad: true,
});

type Dims = { M: number; I: number; O: number; r: number };

// Each named operand's shape in terms of the four dimensions.
const layouts: Record<string, [keyof Dims, keyof Dims] | [keyof Dims]> = {
  x: ['M', 'I'], weight: ['O', 'I'], bias: ['O'], A: ['I', 'r'], B: ['r', 'O'], s: ['M', 'r'], dy: ['M', 'O'],
};

/** Reads M, I, O, r from the Tensors' shapes and the explicit numbers, checking they agree. */
function dims(where: string, input: Record<string, unknown>, names: string[]): Dims {
  const found: Partial<Dims> = {};
  const set = (k: keyof Dims, v: number, from: string) => {
    if (found[k] !== undefined && found[k] !== v) fail('ERR_SHAPE', where, from, `${k} = ${found[k]} (as elsewhere)`, said(`${k} = ${v}`));
    found[k] = v;
  };
  for (const k of ['M', 'I', 'O', 'r'] as const) if (input[k] !== undefined) set(k, checkDim(where, k, input[k], k === 'r' ? 1 : 0), k);
  for (const name of names) {
    const v = input[name];
    if (!(v instanceof Tensor)) continue;
    const layout = layouts[name];
    if (v.shape.length !== layout.length) fail('ERR_SHAPE', where, name, `a ${layout.length}-d tensor (${layout.join(', ')})`, said(`shape [${v.shape.join(', ')}]`));
    layout.forEach((k, i) => set(k, v.shape[i], name));
  }
  for (const k of ['M', 'I', 'O', 'r'] as const) {
    if (found[k] === undefined) fail('ERR_SHAPE', where, k, `${k} from a Tensor's shape or given as a number`, undefined);
    checkDim(where, k, found[k], k === 'r' ? 1 : 0);  // values read from a Tensor's shape are checked here
  }
  return found as Dims;
}

function operandOf(where: string, input: Record<string, unknown>, name: string, d: Dims, on: Placement): Operand {
  return exact(where, name, input[name], layouts[name].map((k) => d[k]), on);
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

function flag(where: string, inp: Record<string, unknown>, name: string): boolean {
  return inp[name] === undefined ? true : checkBoolean(where, name, inp[name]);
}

/** A new (rows, cols) result where the call runs. */
function result(where: string, rows: number, cols: number, on: Placement): { tensor: Tensor; op: Operand } {
  return output(where, undefined, [rows, cols], on);
}

/** Where the op runs (x's backend, which must have ops kernels), checked before anything is allocated. */
const opsOf = (where: string, x: unknown) => backendWith(where, 'x', x, (b) => b.ops, 'ops.*');

function forwardCall(where: string, input: LoraForwardInput): { kernels: OpsKernels; call: Call<OpsForward, { y: Tensor; s: Tensor }> } {
  const inp = inputObject(where, input, FORWARD_KEYS, ['x', 'weight', 'A', 'B']);
  const d = dims(where, inp, ['x', 'weight', 'bias', 'A', 'B']);
  const { on, kernels } = opsOf(where, inp.x);
  const hasBias = inp.bias !== undefined && inp.bias !== null;
  const y = result(where, d.M, d.O, on);
  const s = result(where, d.M, d.r, on);
  const c: OpsForward = {
    where, ...d,
    x: operandOf(where, inp, 'x', d, on), W: operandOf(where, inp, 'weight', d, on),
    bias: hasBias ? operandOf(where, inp, 'bias', d, on) : null,
    A: operandOf(where, inp, 'A', d, on), B: operandOf(where, inp, 'B', d, on),
    scaling: checkFiniteNumber(where, 'scaling', inp.scaling), fused: flag(where, inp, 'fused'),
    s: s.op, y: y.op,
  };
  return { kernels, call: { c, result: { y: y.tensor, s: s.tensor } } };
}

function backwardCall(where: string, input: LoraBackwardInput): { kernels: OpsKernels; call: Call<OpsBackward, { dx: Tensor | null; dA: Tensor; dB: Tensor }> } {
  const inp = inputObject(where, input, BACKWARD_KEYS, ['x', 's', 'dy', 'weight', 'A', 'B']);
  const d = dims(where, inp, ['x', 's', 'dy', 'weight', 'A', 'B']);
  const { on, kernels } = opsOf(where, inp.x);
  const dx = !flag(where, inp, 'inputGrad') ? null : result(where, d.M, d.I, on);
  const dA = result(where, d.I, d.r, on);
  const dB = result(where, d.r, d.O, on);
  const c: OpsBackward = {
    where, ...d,
    x: operandOf(where, inp, 'x', d, on), s: operandOf(where, inp, 's', d, on), dy: operandOf(where, inp, 'dy', d, on),
    W: operandOf(where, inp, 'weight', d, on), A: operandOf(where, inp, 'A', d, on), B: operandOf(where, inp, 'B', d, on),
    scaling: checkFiniteNumber(where, 'scaling', inp.scaling), fused: flag(where, inp, 'fused'),
    dx: dx?.op ?? null, dA: dA.op, dB: dB.op,
  };
  return { kernels, call: { c, result: { dx: dx?.tensor ?? null, dA: dA.tensor, dB: dB.tensor } } };
}

/** y = x·Wᵀ + b + scaling·(x·A)·B, and s = x·A for backward. */
export function loraForward(input: LoraForwardInput): { y: Tensor; s: Tensor } {
  const { kernels, call } = forwardCall('ops.loraForward', input);
  return run(call, (c) => kernels.forward(c));
}

export async function loraForwardAsync(input: LoraForwardInput): Promise<{ y: Tensor; s: Tensor }> {
  const { kernels, call } = forwardCall('ops.loraForwardAsync', input);
  return runAsync(() => call, (c) => kernels.forwardAsync(c));
}

/** dx = dy·W + scaling·dy·Bᵀ·Aᵀ, dA = xᵀ·(scaling·dy·Bᵀ), dB = scaling·sᵀ·dy. */
export function loraBackward(input: LoraBackwardInput): { dx: Tensor | null; dA: Tensor; dB: Tensor } {
  const { kernels, call } = backwardCall('ops.loraBackward', input);
  return run(call, (c) => kernels.backward(c));
}

export async function loraBackwardAsync(input: LoraBackwardInput): Promise<{ dx: Tensor | null; dA: Tensor; dB: Tensor }> {
  const { kernels, call } = backwardCall('ops.loraBackwardAsync', input);
  return runAsync(() => call, (c) => kernels.backwardAsync(c));
}
