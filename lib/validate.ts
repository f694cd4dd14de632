// Every argument check of the public API, in one place, with one message shape:
// "<where>: expected <what> for <argument> but received <what came>". The native layer checks again
// what it relies on (buffer types and lengths); these checks come first and say more.
import { describe, LoraError } from './errors';

/** Largest element count we accept: exact in a double, and far above any real layer. */
export const MAX_ELEMENTS = 2 ** 53;
/** Largest single dimension: BLAS and our kernels index with int32. */
export const MAX_DIM = 2 ** 31 - 1;

export function fail(code: LoraError['code'], where: string, arg: string, expected: string, received: unknown): never {
  throw new LoraError(code, `${where}: expected ${expected} for ${arg} but received ${describe(received)}`);
}

export function isInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v);
}

/** A dimension: an integer in [min, 2^31 − 1]. */
export function checkDim(where: string, arg: string, v: unknown, min = 1): number {
  if (!isInt(v) || v < min || v > MAX_DIM) fail('ERR_SHAPE', where, arg, `an integer in [${min}, 2^31 - 1]`, v);
  return v;
}

/** A shape: an array of integer dimensions whose product stays below 2^53. Returns its element count. */
export function checkShape(where: string, arg: string, shape: unknown): number {
  if (!Array.isArray(shape)) fail('ERR_SHAPE', where, arg, 'an array of non-negative integers', shape);
  let n = 1;
  for (let i = 0; i < shape.length; i++) {
    const d = shape[i];
    if (!isInt(d) || d < 0 || d > MAX_DIM) fail('ERR_SHAPE', where, `${arg}[${i}]`, 'an integer in [0, 2^31 - 1]', d);
    n *= d;
    if (n > MAX_ELEMENTS) fail('ERR_SHAPE', where, arg, 'a shape with at most 2^53 elements', `[${shape.join(', ')}]`);
  }
  return n;
}

export function checkFiniteNumber(where: string, arg: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) fail('ERR_ARGUMENT', where, arg, 'a finite number', v);
  return v;
}

export function checkPositiveNumber(where: string, arg: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) fail('ERR_ARGUMENT', where, arg, 'a finite number > 0', v);
  return v;
}

export function checkBoolean(where: string, arg: string, v: unknown): boolean {
  if (typeof v !== 'boolean') fail('ERR_ARGUMENT', where, arg, 'a boolean', v);
  return v;
}

/** Dropout probability in [0, 1). */
export function checkDropout(where: string, v: unknown): number {
  if (typeof v !== 'number' || !(v >= 0 && v < 1)) fail('ERR_ARGUMENT', where, 'dropout', 'a number in [0, 1)', v);
  return v;
}

/** A seed: an integer in [0, 2^53]. */
export function checkSeed(where: string, v: unknown): number {
  if (!isInt(v) || v < 0 || v > MAX_ELEMENTS) fail('ERR_ARGUMENT', where, 'seed', 'an integer in [0, 2^53]', v);
  return v;
}

/** Options objects: undefined becomes {}, anything but a plain object is an error. */
export function checkOptions<T extends object>(where: string, v: unknown): Partial<T> {
  if (v === undefined) return {};
  if (v === null || typeof v !== 'object' || Array.isArray(v)) fail('ERR_ARGUMENT', where, 'options', 'an options object', v);
  return v as Partial<T>;
}

/** Checks that every element is finite (NaN and ±Infinity are refused). */
export function checkFinite(where: string, arg: string, data: Float32Array): void {
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (v - v !== 0) {
      throw new LoraError('ERR_NOT_FINITE', `${where}: expected finite values in ${arg} but received ${v} at index ${i}`);
    }
  }
}

export function shapeString(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}
