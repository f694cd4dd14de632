// Turning what a caller passes (a Tensor, or a Float32Array with the shape implied) into storage
// plus shape, with the checks that go with it. Used by every module and op.
import { Tensor } from './tensor';
import { fail } from './errors';
import { allocFloats, checkShape, MAX_DIM, shapeString } from './validate';

export type TensorLike = Tensor | Float32Array;

export interface Resolved {
  data: Float32Array;
  shape: readonly number[];
}

/**
 * A Tensor or Float32Array; a Float32Array takes `inferShape(length)` (or [length]) as its shape.
 * A Tensor built by hand (the constructor wraps without checking) has its shape checked here, at
 * every use. Storage over a resizable ArrayBuffer is refused: it could shrink under a running async
 * kernel, which holds a raw pointer into it.
 */
export function resolve(where: string, arg: string, value: unknown, inferShape?: (length: number) => readonly number[]): Resolved {
  let data: Float32Array, shape: readonly number[];
  if (value instanceof Tensor) {
    data = value.buffer(`${where}: ${arg}`);
    shape = value.shape;
    const n = checkShape(where, `${arg}.shape`, shape);
    if (data.length !== n) fail('ERR_SHAPE', where, arg, `storage of ${n} elements for shape ${shapeString(shape)}`, `${data.length} elements`);
  } else if (value instanceof Float32Array) {
    data = value;
    shape = inferShape ? inferShape(value.length) : [value.length];
  } else if (ArrayBuffer.isView(value)) {
    return fail('ERR_DTYPE', where, arg, 'a float32 Tensor or Float32Array', value);
  } else {
    return fail('ERR_ARGUMENT', where, arg, 'a Tensor or Float32Array', value);
  }
  if ((data.buffer as { resizable?: boolean }).resizable === true) {
    fail('ERR_ARGUMENT', where, arg, 'storage over a fixed-length ArrayBuffer', 'a Float32Array over a resizable ArrayBuffer');
  }
  return { data, shape };
}

/**
 * An input of shape (..., features): rank >= 1 with the last dimension `features`; the leading
 * dimensions flatten to M rows. A Float32Array is read as (length / features, features).
 */
export function resolveRows(where: string, arg: string, value: unknown, features: number): Resolved & { M: number } {
  const r = resolve(where, arg, value, (n) => (n % features === 0 ? [n / features, features] : [n]));
  const last = r.shape[r.shape.length - 1];
  if (r.shape.length === 0 || last !== features) {
    fail('ERR_SHAPE', where, arg, `a shape (..., ${features})`, `shape ${shapeString(r.shape)}`);
  }
  const M = r.data.length / features;
  // The rows are one GEMM dimension: int32, like every dimension the kernels take.
  if (M > MAX_DIM) fail('ERR_SHAPE', where, arg, `at most 2^31 - 1 rows of ${features}`, `shape ${shapeString(r.shape)} (${M} rows)`);
  return { ...r, M };
}

/** A tensor of exactly `shape`. A Float32Array must have the right length. */
export function resolveExact(where: string, arg: string, value: unknown, shape: readonly number[]): Resolved {
  const r = resolve(where, arg, value, () => shape);
  const n = shape.reduce((a, b) => a * b, 1);
  const same = r.shape.length === shape.length && r.shape.every((d, i) => d === shape[i]);
  if (!same || r.data.length !== n) {
    fail('ERR_SHAPE', where, arg, `shape ${shapeString(shape)}`, `shape ${shapeString(r.shape)}${r.data.length !== n ? ` with ${r.data.length} elements` : ''}`);
  }
  return r;
}

/**
 * The output tensor of an op: `out` when given (checked), else a new one. A given `out` must not
 * share memory with anything the kernel reads while it writes (`reads`, by name): the kernels write
 * outputs in several passes and an overlap would give wrong values or change a layer's weights.
 */
export function output(where: string, out: unknown, shape: readonly number[], reads: ReadonlyArray<readonly [string, Float32Array | null | undefined]> = []): Tensor {
  if (out === undefined) return new Tensor(allocFloats(where, 'the result', shape.reduce((a, b) => a * b, 1), shape), shape);
  if (!(out instanceof Tensor)) return fail('ERR_ARGUMENT', where, 'out', 'a Tensor', out);
  const o = resolveExact(where, 'out', out, shape).data;
  checkNoOverlap(where, 'options.out', o, reads);
  return out;
}

/** Whether two typed arrays share at least one byte. */
export function overlaps(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return a.buffer === b.buffer && a.byteLength > 0 && b.byteLength > 0 &&
    a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}

/** ERR_ARGUMENT when `out` (named `arg`) shares memory with any of `reads`. */
export function checkNoOverlap(where: string, arg: string, out: Float32Array, reads: ReadonlyArray<readonly [string, Float32Array | null | undefined]>): void {
  for (const [name, a] of reads) {
    if (a && overlaps(out, a)) fail('ERR_ARGUMENT', where, arg, `a tensor that does not share memory with ${name}`, `one that overlaps ${name}`);
  }
}
