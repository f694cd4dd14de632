// Turning what a caller passes (a Tensor, or a Float32Array with the shape implied) into storage
// plus shape, with the checks that go with it. Used by every module and op.
import { Tensor } from './tensor';
import { fail, shapeString } from './validate';

export type TensorLike = Tensor | Float32Array;

export interface Resolved {
  data: Float32Array;
  shape: readonly number[];
}

/** A Tensor or Float32Array; a Float32Array takes `inferShape(length)` (or [length]) as its shape. */
export function resolve(where: string, arg: string, value: unknown, inferShape?: (length: number) => readonly number[]): Resolved {
  if (value instanceof Tensor) { const data = value.buffer(`${where}: ${arg}`); if (data.length !== value.size) fail('ERR_SHAPE', where, arg, `storage of ${value.size} elements for shape ${shapeString(value.shape)}`, `${data.length} elements`); return { data, shape: value.shape }; }
  if (value instanceof Float32Array) return { data: value, shape: inferShape ? inferShape(value.length) : [value.length] };
  if (ArrayBuffer.isView(value)) fail('ERR_DTYPE', where, arg, 'a float32 Tensor or Float32Array', value);
  return fail('ERR_ARGUMENT', where, arg, 'a Tensor or Float32Array', value);
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
  return { ...r, M: r.data.length / features };
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

/** The output tensor of an op: `out` when given (checked), else a new one. */
export function output(where: string, out: unknown, shape: readonly number[]): Tensor {
  if (out === undefined) return new Tensor(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);
  if (!(out instanceof Tensor)) return fail('ERR_ARGUMENT', where, 'out', 'a Tensor', out);
  resolveExact(where, 'out', out, shape);
  return out;
}
