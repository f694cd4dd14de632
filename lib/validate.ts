// The checks of plain arguments (dimensions, shapes, numbers, flags, option keys), each once; tensor
// arguments are lib/operands.ts's. Every message comes from lib/errors.ts. The native layer checks
// again what it relies on (buffer types and lengths); these checks come first and say more.
import { distance } from 'fastest-levenshtein';
import { errorAt, fail, said } from './errors';

/** Largest element count we accept: exact in a double, and far above any real layer. */
export const MAX_ELEMENTS = 2 ** 53;
/** Largest single dimension: BLAS and our kernels index with int32. */
export const MAX_DIM = 2 ** 31 - 1;

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
    if (n > MAX_ELEMENTS) fail('ERR_SHAPE', where, arg, 'a shape with at most 2^53 elements', said(`[${shape.join(', ')}]`));
  }
  return n;
}

/**
 * A new Float32Array of `n` elements for `arg`. A size the shape checks allow can still be more than
 * a typed array holds (2^32 elements in Node 20) or than the process can allocate: that is ERR_BACKEND
 * naming the argument, not a RangeError from deep inside a call.
 */
export function allocFloats(where: string, arg: string, n: number, shape?: readonly number[]): Float32Array {
  try {
    return new Float32Array(n);
  } catch (e) {
    throw errorAt('ERR_BACKEND', where, `expected to allocate ${n} float32 elements for ${arg}${shape ? ` (shape ${shapeString(shape)})` : ''} but received`, e);
  }
}

/** A number the float32 kernels see as finite (|v| below 3.4e38: a larger double would become Infinity). */
export function checkFiniteNumber(where: string, arg: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(Math.fround(v))) fail('ERR_ARGUMENT', where, arg, 'a finite number (finite in float32)', v);
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

/**
 * Dropout probability in [0, 1). The kernel computes in float32, so p must stay below 1 once rounded
 * to float32 too (1 - 1e-9 would round to 1 and drop everything); callers treat a p whose float32 is
 * 0 (a subnormal double) as no dropout, as the kernel does.
 */
export function checkDropout(where: string, v: unknown): number {
  if (typeof v !== 'number' || !(v >= 0 && Math.fround(v) < 1)) fail('ERR_ARGUMENT', where, 'dropout', 'a number in [0, 1) (below 1 in float32)', v);
  return v;
}

/** A seed: an integer in [0, 2^53]. */
export function checkSeed(where: string, v: unknown): number {
  if (!isInt(v) || v < 0 || v > MAX_ELEMENTS) fail('ERR_ARGUMENT', where, 'seed', 'an integer in [0, 2^53]', v);
  return v;
}

/**
 * The keys an options type T takes, each once. Declared as `optionKeys<T>({ key: true, ... })` next
 * to the interface: a key of T left out, or one T lacks, fails to compile, so the list the checks use
 * cannot drift from the type the caller sees.
 */
export type KeyRecord<T> = { readonly [K in keyof T]-?: true };

export interface OptionKeys<T> {
  /** The record itself, to build a larger list from ({ ...LINEAR_LORA_KEYS.record, rank: true }). */
  readonly record: KeyRecord<T>;
  /** In the order declared, for messages. */
  readonly names: readonly string[];
}

export function optionKeys<T>(record: KeyRecord<T>): OptionKeys<T> {
  return Object.freeze({ record: Object.freeze({ ...record }), names: Object.freeze(Object.keys(record)) });
}

/**
 * Options objects: undefined becomes {}, anything but a plain object is an error, and so is a key the
 * call does not take, whatever its value (`{ alhpa: undefined }` too: a typo is a typo). `arg` names
 * the object in messages.
 */
export function checkOptions<T extends object>(where: string, v: unknown, keys: OptionKeys<T>, arg = 'options'): Partial<T> {
  if (v === undefined) return {};
  if (v === null || typeof v !== 'object' || Array.isArray(v)) fail('ERR_ARGUMENT', where, arg, arg === 'options' ? 'an options object' : 'an object', v);
  checkKeys(where, arg, v, keys);
  return v as Partial<T>;
}

/**
 * ERR_ARGUMENT for the first own key of `v` that is not in `keys`, naming it, the keys the call takes
 * and the one it most likely meant. `arg` is the object's name ('' for a top-level document). It runs
 * on every call that takes options (forward too): with every key known it is one loop over them.
 */
export function checkKeys(where: string, arg: string, v: object, keys: OptionKeys<unknown>): void {
  for (const key in v) {
    if (!Object.hasOwn(v, key) || Object.hasOwn(keys.record, key)) continue;
    const close = closestKey(key, keys.names);
    const name = key.length > 40 ? `${key.slice(0, 40)}…` : key;
    const shown = /^[A-Za-z_$][\w$]*$/.test(key) ? `${arg ? `${arg}.` : ''}${name}` : `${arg}[${JSON.stringify(name)}]`;
    fail('ERR_ARGUMENT', where, shown, `${arg ? `${arg} ` : ''}keys among ${keys.names.join(', ')}`, said(`an unknown key${close === null ? '' : ` (did you mean '${close}'?)`}`));
  }
}

/**
 * The known key a typo most likely meant, or null: the nearest by edit distance once case, '_' and
 * '-' are set aside (so weight_decay finds weightDecay), if it is at most 2 edits away and those
 * edits touch at most half of the longer key (so a one-letter key is not "near" every other
 * one-letter key). Levenshtein counts a swap of two letters as 2, which both limits allow for
 * ('bais' finds 'bias'). Ties go to the key declared first.
 */
export function closestKey(key: string, names: readonly string[]): string | null {
  const fold = (s: string) => s.toLowerCase().replace(/[_-]/g, '');
  const k = fold(key);
  let best: string | null = null, bestDistance = Infinity;
  for (const name of names) {
    const n = fold(name);
    const d = distance(k, n);
    if (d < bestDistance && d <= 2 && 2 * d <= Math.max(k.length, n.length)) {
      best = name;
      bestDistance = d;
    }
  }
  return best;
}

/** Checks that every element is finite (NaN and ±Infinity are refused). */
export function checkFinite(where: string, arg: string, data: Float32Array): void {
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (v - v !== 0) fail('ERR_NOT_FINITE', where, arg, 'finite values', said(`${v} at index ${i}`));
  }
}

export function shapeString(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}
