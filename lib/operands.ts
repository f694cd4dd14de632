// What a caller passes for a tensor argument (a Tensor, or where the backend takes one, a Float32Array
// with its shape implied), turned into an Operand of the call's placement, with every check that goes
// with it and one wording for every backend: a live tensor, on the layer's device (nothing moves
// between devices behind the caller's back: .to() says where the copy happens), in its dtype, whose
// storage matches its shape (a Tensor built by hand is checked at every use), and for host memory, not
// over a resizable ArrayBuffer (it could shrink under a running async kernel, which holds a raw
// pointer into it). Outputs are checked not to share memory with what the kernel reads.
import type { Backend, Operand, Placement, Rows, TensorStorage } from './backends/backend';
import { BACKENDS, backendFor, HOST } from './backends/registry';
import { fail, said } from './errors';
import { placementOf } from './placement';
import { Tensor } from './tensor';
import { checkShape, MAX_DIM, MAX_ELEMENTS, shapeString } from './validate';

export type TensorLike = Tensor | Float32Array;

/** What a kernel reads while it writes an output, by name (null entries are skipped). */
export type Reads = ReadonlyArray<readonly [string, Operand | null | undefined]>;

/**
 * The storage of a Tensor argument, checked as the file's header says. Allocates nothing: optimizers
 * check every parameter at every step.
 */
export function tensorStorage(where: string, arg: string, t: Tensor, on: Placement, quantized = false): TensorStorage {
  const s = t.storage(where, arg);
  if (s.quantized && !quantized) {
    fail('ERR_DTYPE', where, arg, `a ${on.dtype} tensor`, said(`a weight quantized to ${s.quantized}`),
      'only the Linear that holds it (and a LinearLoRA over it) computes with a quantized weight; tensor.to() dequantizes a copy');
  }
  if (t.device !== on.device) {
    fail('ERR_DEVICE', where, arg, `a ${on.device} tensor`, said(`a ${t.device} tensor (${t.dtype}, shape ${shapeString(t.shape)})`),
      `this runs on ${backendFor(on).label}: copy it with .to('${on.device}'${on.dtype === 'float32' ? '' : `, { dtype: '${on.dtype}' }`})`);
  }
  if (t.dtype !== on.dtype) {
    fail('ERR_DTYPE', where, arg, `a ${on.dtype} tensor`, said(`a ${t.dtype} one`), `${on.dtype} is the dtype here: convert it with .to('${on.device}', { dtype: '${on.dtype}' })`);
  }
  const n = elements(t.shape) ?? checkShape(where, `${arg}.shape`, t.shape);
  if (s.length !== n) fail('ERR_SHAPE', where, arg, `storage of ${n} elements for shape ${shapeString(t.shape)}`, said(`${s.length} elements`));
  checkFixedLength(where, arg, s);
  return s;
}

/** A tensor argument of any shape; a Float32Array takes `inferShape(length)` (or [length]). */
export function operand(where: string, arg: string, value: unknown, on: Placement, inferShape?: (length: number) => readonly number[], quantized = false): Operand {
  if (value instanceof Tensor) {
    const storage = tensorStorage(where, arg, value, on, quantized);
    return { storage, shape: value.shape, n: storage.length };
  }
  const storage = backendFor(on).adopt(where, arg, value, on.dtype);
  checkFixedLength(where, arg, storage);
  return { storage, shape: inferShape ? inferShape(storage.length) : [storage.length], n: storage.length };
}

/**
 * An input of shape (..., features): rank >= 1 with the last dimension `features`; the leading
 * dimensions flatten to M rows. A Float32Array is read as (length / features, features).
 */
export function rows(where: string, arg: string, value: unknown, features: number, on: Placement): Rows {
  const o = operand(where, arg, value, on, (n) => (n % features === 0 ? [n / features, features] : [n]));
  if (o.shape.length === 0 || o.shape[o.shape.length - 1] !== features) {
    fail('ERR_SHAPE', where, arg, `a shape (..., ${features})`, said(`shape ${shapeString(o.shape)}`));
  }
  const M = o.n / features;
  // The rows are one GEMM dimension: int32, like every dimension the kernels take.
  if (M > MAX_DIM) fail('ERR_SHAPE', where, arg, `at most 2^31 - 1 rows of ${features}`, said(`shape ${shapeString(o.shape)} (${M} rows)`));
  return { storage: o.storage, shape: o.shape, n: o.n, M };
}

/** `shape` with its last dimension replaced: an output's shape from its input's (..., features). */
export function withLast(shape: readonly number[], last: number): number[] {
  // A loop, not [...shape.slice(0, -1), last]: tensor shapes are frozen, and copying them that way is slow.
  const n = shape.length, out = new Array<number>(n);
  for (let i = 0; i < n - 1; i++) out[i] = shape[i];
  out[n - 1] = last;
  return out;
}

/** A tensor argument of exactly `shape`; a Float32Array must have its length. `quantized`: a quantized weight is taken (a Linear's own). */
export function exact(where: string, arg: string, value: unknown, shape: readonly number[], on: Placement, quantized = false): Operand {
  const o = operand(where, arg, value, on, () => shape, quantized);
  let n = 1, same = o.shape.length === shape.length;
  for (let i = 0; i < shape.length; i++) {
    n *= shape[i];
    same &&= o.shape[i] === shape[i];
  }
  if (!same || o.n !== n) {
    fail('ERR_SHAPE', where, arg, `shape ${shapeString(shape)}`, said(`shape ${shapeString(o.shape)}${o.n !== n ? ` with ${o.n} elements` : ''}`));
  }
  return o;
}

/**
 * The output of an op: `out` when given (a Tensor of `shape` and the call's placement that
 * shares no memory with `reads`: the kernels write outputs in several passes, and an overlap would
 * give wrong values or change a layer's weights), else a new tensor. Its contents are left to the op.
 * `arg` names `out` in messages.
 */
export function output(where: string, out: unknown, shape: readonly number[], on: Placement, reads: Reads = [], arg = 'options.out'): { tensor: Tensor; op: Operand } {
  if (out === undefined) {
    const n = shape.reduce((a, b) => a * b, 1);
    const storage = backendFor(on).alloc(where, `the result (shape ${shapeString(shape)})`, on.dtype, n, false);
    return { tensor: new Tensor(storage, shape), op: { storage, shape, n } };
  }
  if (!(out instanceof Tensor)) fail('ERR_ARGUMENT', where, arg, 'a Tensor', out);
  const op = exact(where, arg, out, shape, on);
  checkNoOverlap(where, arg, op, reads);
  return { tensor: out, op };
}

/** ERR_ARGUMENT when `o` (named `arg`) shares memory with any of `reads`. */
export function checkNoOverlap(where: string, arg: string, o: Operand, reads: Reads): void {
  for (const [name, r] of reads) {
    if (r && o.storage.overlaps(r.storage)) fail('ERR_ARGUMENT', where, arg, `a tensor that does not share memory with ${name}`, said(`one that overlaps ${name}`));
  }
}

/** The element count of a valid shape, or undefined (then checkShape says what is wrong with it). */
function elements(shape: readonly number[]): number | undefined {
  let n = 1;
  for (let i = 0; i < shape.length; i++) {
    const d = shape[i];
    if (!Number.isInteger(d) || d < 0 || d > MAX_DIM) return undefined;
    n *= d;
  }
  return n <= MAX_ELEMENTS ? n : undefined;
}

function checkFixedLength(where: string, arg: string, s: TensorStorage): void {
  if (s.hostArray !== null && (s.hostArray.buffer as { resizable?: boolean }).resizable === true) {
    fail('ERR_ARGUMENT', where, arg, 'storage over a fixed-length ArrayBuffer', said('a Float32Array over a resizable ArrayBuffer'));
  }
}

/**
 * The kernels `pick` finds on the backend of `value` (a Tensor's placement; host memory otherwise),
 * or ERR_DEVICE naming `arg` and the devices where `what` runs, for what no backend there has yet.
 */
export function backendWith<K>(where: string, arg: string, value: unknown, pick: (b: Backend) => K | null, what: string, note?: string): { on: Placement; kernels: K } {
  if (value instanceof Tensor) value.assertLive(where, arg);  // a disposed tensor is ERR_DISPOSED wherever it lived
  const on = value instanceof Tensor ? placementOf(value) : HOST;
  const kernels = pick(backendFor(on));
  if (kernels !== null) return { on, kernels };
  const here = BACKENDS.filter((b) => pick(b) !== null);
  const t = value as Tensor;
  const uniq = (xs: string[]) => [...new Set(xs)].join(' or ');
  // On the tensor's own device, what differs is the dtype (a bfloat16 CPU tensor where only float32 runs).
  const sameDevice = here.filter((b) => b.device === t.device);
  const expected = sameDevice.length > 0 ? `a ${t.device} ${uniq(sameDevice.flatMap((b) => [...b.dtypes]))} tensor` : `a ${uniq(here.map((b) => b.device))} tensor`;
  const copy = sameDevice.length > 0 ? `.to('${t.device}', { dtype: '${sameDevice[0].dtypes[0]}' })` : `.to('${here[0].device}')`;
  return fail('ERR_DEVICE', where, arg, expected, said(`a ${t.device} tensor (${t.dtype}, shape ${shapeString(t.shape)})`),
    `${what} runs on ${uniq(here.map((b) => b.label))} only for now: ${note ?? `copy it with ${copy}`}`);
}
