// ops: the LoRA kernels as plain functions, for other frameworks that keep their own parameters and
// autograd. Fused, no dropout (apply it to x yourself); results are new tensors and dA, dB are not
// accumulated. Dimensions come from the Tensors' shapes, or from M, I, O, r for Float32Arrays.
import { native, LoraBackwardArgs, LoraForwardArgs } from './backends/cpu/binding';
import { resolveExact, Resolved, TensorLike } from './inputs';
import { Tensor } from './tensor';
import { fail } from './errors';
import { allocFloats, checkBoolean, checkDim, checkFiniteNumber, checkKeys, OptionKeys, optionKeys } from './validate';

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
    if (found[k] !== undefined && found[k] !== v) fail('ERR_SHAPE', where, from, `${k} = ${found[k]} (as elsewhere)`, `${k} = ${v}`);
    found[k] = v;
  };
  for (const k of ['M', 'I', 'O', 'r'] as const) if (input[k] !== undefined) set(k, checkDim(where, k, input[k], k === 'r' ? 1 : 0), k);
  for (const name of names) {
    const v = input[name];
    if (!(v instanceof Tensor)) continue;
    const layout = layouts[name];
    if (v.shape.length !== layout.length) fail('ERR_SHAPE', where, name, `a ${layout.length}-d tensor (${layout.join(', ')})`, `shape [${v.shape.join(', ')}]`);
    layout.forEach((k, i) => set(k, v.shape[i], name));
  }
  for (const k of ['M', 'I', 'O', 'r'] as const) {
    if (found[k] === undefined) fail('ERR_SHAPE', where, k, `${k} from a Tensor's shape or given as a number`, undefined);
    checkDim(where, k, found[k], k === 'r' ? 1 : 0);  // values read from a Tensor's shape are checked here
  }
  return found as Dims;
}

function operand(where: string, input: Record<string, unknown>, name: string, d: Dims): Resolved {
  return resolveExact(where, name, input[name], layouts[name].map((k) => d[k]));
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

function forwardArgs(where: string, input: LoraForwardInput) {
  const inp = inputObject(where, input, FORWARD_KEYS, ['x', 'weight', 'A', 'B']);
  const d = dims(where, inp, ['x', 'weight', 'bias', 'A', 'B']);
  const hasBias = inp.bias !== undefined && inp.bias !== null;
  const y = new Tensor(allocFloats(where, 'y', d.M * d.O, [d.M, d.O]), [d.M, d.O]);
  const s = new Tensor(allocFloats(where, 's', d.M * d.r, [d.M, d.r]), [d.M, d.r]);
  const args: LoraForwardArgs = {
    ...d,
    x: operand(where, inp, 'x', d).data, W: operand(where, inp, 'weight', d).data,
    bias: hasBias ? operand(where, inp, 'bias', d).data : null,
    A: operand(where, inp, 'A', d).data, B: operand(where, inp, 'B', d).data,
    scaling: checkFiniteNumber(where, 'scaling', inp.scaling), fused: flag(where, inp, 'fused'),
    s: s.buffer(), y: y.buffer(),
  };
  return { args, y, s };
}

function backwardArgs(where: string, input: LoraBackwardInput) {
  const inp = inputObject(where, input, BACKWARD_KEYS, ['x', 's', 'dy', 'weight', 'A', 'B']);
  const d = dims(where, inp, ['x', 's', 'dy', 'weight', 'A', 'B']);
  const dx = !flag(where, inp, 'inputGrad') ? null : new Tensor(allocFloats(where, 'dx', d.M * d.I, [d.M, d.I]), [d.M, d.I]);
  const dA = new Tensor(allocFloats(where, 'dA', d.I * d.r, [d.I, d.r]), [d.I, d.r]);
  const dB = new Tensor(allocFloats(where, 'dB', d.r * d.O, [d.r, d.O]), [d.r, d.O]);
  const args: LoraBackwardArgs = {
    ...d,
    x: operand(where, inp, 'x', d).data, s: operand(where, inp, 's', d).data, dy: operand(where, inp, 'dy', d).data,
    W: operand(where, inp, 'weight', d).data, A: operand(where, inp, 'A', d).data, B: operand(where, inp, 'B', d).data,
    scaling: checkFiniteNumber(where, 'scaling', inp.scaling), fused: flag(where, inp, 'fused'),
    ds: allocFloats(where, 'ds', d.M * d.r), dx: dx ? dx.buffer() : null, dA: dA.buffer(), dB: dB.buffer(), accumulate: false,
  };
  return { args, dx, dA, dB };
}

/** y = x·Wᵀ + b + scaling·(x·A)·B, and s = x·A for backward. */
export function loraForward(input: LoraForwardInput): { y: Tensor; s: Tensor } {
  const { args, y, s } = forwardArgs('ops.loraForward', input);
  native.loraForward(args);
  return { y, s };
}

export async function loraForwardAsync(input: LoraForwardInput): Promise<{ y: Tensor; s: Tensor }> {
  const { args, y, s } = forwardArgs('ops.loraForwardAsync', input);
  await native.loraForwardAsync(args);
  return { y, s };
}

/** dx = dy·W + scaling·dy·Bᵀ·Aᵀ, dA = xᵀ·(scaling·dy·Bᵀ), dB = scaling·sᵀ·dy. */
export function loraBackward(input: LoraBackwardInput): { dx: Tensor | null; dA: Tensor; dB: Tensor } {
  const { args, dx, dA, dB } = backwardArgs('ops.loraBackward', input);
  native.loraBackward(args);
  return { dx, dA, dB };
}

export async function loraBackwardAsync(input: LoraBackwardInput): Promise<{ dx: Tensor | null; dA: Tensor; dB: Tensor }> {
  const { args, dx, dA, dB } = backwardArgs('ops.loraBackwardAsync', input);
  await native.loraBackwardAsync(args);
  return { dx, dA, dB };
}
