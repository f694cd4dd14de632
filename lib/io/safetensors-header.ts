// The safetensors header, checked in full before anything of a size it claims is allocated:
//   u64 little-endian N | N bytes of UTF-8 JSON | data (offsets relative to the data's start).
// `invalid` is the caller's thrower (ERR_IO naming the file); every check here ends in it.
import { DTYPE_BITS } from './dtype';
import { findDuplicateKey } from './json-keys';
import { setOwn } from './own';

/** Largest header we read: the reference implementation's limit (100 MB, which is < 100 MiB). */
export const MAX_HEADER_BYTES = 100_000_000;
/** Element counts past 2^53 are not exact in a double: no real tensor comes near. */
const MAX_ELEMENTS = 2 ** 53;

export type Invalid = (what: string) => never;

export interface HeaderEntry {
  name: string;
  dtype: string;
  shape: number[];
  /** Elements (the product of shape). */
  count: number;
  /** Byte range in the data section, [begin, end). */
  begin: number;
  end: number;
}

export interface Header {
  /** In the order of the JSON text. */
  entries: HeaderEntry[];
  metadata: Record<string, string>;
}

/** Checks the 8-byte prefix against the file size; returns N (bytes of JSON that follow). */
export function headerLength(prefix: Uint8Array, fileSize: number, invalid: Invalid): number {
  if (fileSize < 8) invalid(`expected at least 8 bytes (the header length) but received ${fileSize}`);
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) invalid(`expected a header length of at most ${MAX_HEADER_BYTES} bytes but received ${n}`);
  if (n > BigInt(fileSize - 8)) invalid(`expected a header length of at most ${fileSize - 8} bytes (the rest of the file) but received ${n}`);
  return Number(n);
}

/** Parses and checks the JSON header; `dataBytes` is the length of the data section after it. */
export function parseHeader(json: Uint8Array, dataBytes: number, invalid: Invalid): Header {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(json);
  } catch {
    return invalid('expected a UTF-8 header but received invalid UTF-8');
  }
  let root: unknown;
  try {
    root = JSON.parse(text);
  } catch (e) {
    return invalid(`expected a JSON header but received text that does not parse (${(e as Error).message})`);
  }
  if (root === null || typeof root !== 'object' || Array.isArray(root)) invalid(`expected a JSON object as the header but received ${kind(root)}`);
  const dup = findDuplicateKey(text);
  if (dup !== null) invalid(`expected unique keys in the header but received ${JSON.stringify(dup)} twice`);

  let metadata: Record<string, string> = {};
  const entries: HeaderEntry[] = [];
  for (const [name, value] of Object.entries(root as Record<string, unknown>)) {
    if (name === '__metadata__') metadata = checkMetadata(value, invalid);
    else entries.push(checkEntry(name, value, dataBytes, invalid));
  }
  checkNoOverlap(entries, invalid);
  return { entries, metadata };
}

function checkMetadata(value: unknown, invalid: Invalid): Record<string, string> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) invalid(`expected an object for __metadata__ but received ${kind(value)}`);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (typeof v !== 'string') invalid(`expected string values in __metadata__ but received ${kind(v)} for ${JSON.stringify(k)}`);
    setOwn(out, k, v as string);
  }
  return out;
}

function checkEntry(name: string, value: unknown, dataBytes: number, invalid: Invalid): HeaderEntry {
  const t = `tensor ${JSON.stringify(name)}`;
  if (value === null || typeof value !== 'object' || Array.isArray(value)) invalid(`expected an object for ${t} but received ${kind(value)}`);
  const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
  if (typeof dtype !== 'string' || !Object.hasOwn(DTYPE_BITS, dtype)) {
    invalid(`expected a known dtype (${Object.keys(DTYPE_BITS).join(', ')}) for ${t} but received ${kind(dtype)}`);
  }
  if (!Array.isArray(shape)) invalid(`expected an array of non-negative integers as the shape of ${t} but received ${kind(shape)}`);
  let count = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) invalid(`expected non-negative integers in the shape of ${t} but received ${JSON.stringify(shape)}`);
    count *= d;
    if (count > MAX_ELEMENTS) invalid(`expected at most 2^53 elements in ${t} but received shape ${JSON.stringify(shape)}`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
    invalid(`expected data_offsets [begin, end] of non-negative integers for ${t} but received ${JSON.stringify(offsets) ?? 'none'}`);
  }
  const [begin, end] = offsets as number[];
  if (begin > end || end > dataBytes) {
    invalid(`expected data_offsets with begin <= end <= ${dataBytes} (the data section) for ${t} but received [${begin}, ${end}]`);
  }
  // count ≤ 2^53 and bits a small integer: the product is exact or far past any real file size.
  const bits = count * DTYPE_BITS[dtype as string];
  if (bits % 8 !== 0 || bits / 8 !== end - begin) {
    invalid(`expected ${bits / 8} bytes for ${t} (${dtype} ${JSON.stringify(shape)}) but its data_offsets [${begin}, ${end}] hold ${end - begin}`);
  }
  return { name, dtype: dtype as string, shape: shape as number[], count, begin, end };
}

/** Byte ranges may leave gaps (unread) but must not share a byte. */
function checkNoOverlap(entries: HeaderEntry[], invalid: Invalid): void {
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1], cur = sorted[i];
    if (cur.begin < prev.end) {
      invalid(`expected tensors with disjoint data_offsets but received ${JSON.stringify(prev.name)} [${prev.begin}, ${prev.end}] and ${JSON.stringify(cur.name)} [${cur.begin}, ${cur.end}]`);
    }
  }
}

function kind(v: unknown): string {
  if (v === undefined) return 'none';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)}`;
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${String(v)}`;
}
