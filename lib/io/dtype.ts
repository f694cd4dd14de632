// The safetensors format's dtypes and the conversions of ours to and from float32. Every dtype of the
// format is known (so a file's sizes can be checked); ours (lib/dtype.ts: F32, F16 and BF16) are read,
// all three exactly (float32 holds every F16 and BF16 value); those the table marks written are written.
import os from 'node:os';
import { isSafetensorsDType, SafetensorsDType, safetensorsBytes, WRITTEN_SAFETENSORS_DTYPES, WrittenSafetensorsDType } from '../dtype';
import { fail } from '../errors';

/** Bits per element of every dtype the safetensors format defines (sub-byte ones included). */
export const DTYPE_BITS: Readonly<Record<string, number>> = Object.freeze({
  BOOL: 8, U8: 8, I8: 8, F8_E5M2: 8, F8_E4M3: 8, F8_E8M0: 8, F4: 4, F6_E2M3: 6, F6_E3M2: 6,
  I16: 16, U16: 16, F16: 16, BF16: 16,
  I32: 32, U32: 32, F32: 32,
  I64: 64, U64: 64, F64: 64,
  C64: 64,
});

/** The dtypes this package converts to float32 when reading. */
export type ReadableDType = SafetensorsDType;
/** The dtypes this package writes. */
export type WritableDType = WrittenSafetensorsDType;

export const isReadable: (dtype: string) => dtype is ReadableDType = isSafetensorsDType;

/** A dtype option of a writer (undefined: F32), checked. */
export function checkWritable(where: string, arg: string, v: unknown): WritableDType {
  if (v === undefined) return 'F32';
  if (!(WRITTEN_SAFETENSORS_DTYPES as readonly unknown[]).includes(v)) fail('ERR_DTYPE', where, arg, WRITTEN_SAFETENSORS_DTYPES.map((d) => `'${d}'`).join(' or '), v);
  return v as WritableDType;
}

/** The format is little-endian; on a big-endian host every element is byte-swapped in place. */
const BIG_ENDIAN = os.endianness() === 'BE';

/** float32 bits ↔ value, through one shared 4-byte view. */
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

let f16Table: Float32Array | null = null;

/** F16 bits → float32, exact: normals, subnormals (m·2^-24), ±0, ±inf and NaN (payload kept). */
function f16Value(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) {
    if (mant === 0) return sign * Infinity;
    u32[0] = ((h & 0x8000) << 16) | 0x7f800000 | (mant << 13);  // NaN with its payload
    return f32[0];
  }
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** All 65536 F16 values: a 256 KiB table built on first use makes decoding one lookup per element. */
function f16Lookup(): Float32Array {
  if (f16Table === null) {
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16Value(h);
  }
  return f16Table;
}

/**
 * Decodes the little-endian elements of `dtype` in `bytes` into `out` (one element per entry).
 * For F32, `bytes` must be the storage of `out` itself: the file is read straight into it.
 */
export function decodeInto(dtype: ReadableDType, bytes: Uint8Array, out: Float32Array): void {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);  // a view, for swap16/32
  if (dtype === 'F32') {
    if (BIG_ENDIAN) buf.swap32();
    return;
  }
  if (BIG_ENDIAN) buf.swap16();
  const h = new Uint16Array(bytes.buffer, bytes.byteOffset, out.length);
  if (dtype === 'BF16') {
    // BF16 is the high half of a float32: shifting the bits back up is exact, NaN payloads included.
    const o = new Uint32Array(out.buffer, out.byteOffset, out.length);
    for (let i = 0; i < h.length; i++) o[i] = h[i] << 16;
  } else {
    const table = f16Lookup();
    for (let i = 0; i < h.length; i++) out[i] = table[h[i]];
  }
}

/**
 * float32 bits → BF16 bits, rounding to nearest with ties to even (as PyTorch's `.to(torch.bfloat16)`).
 * A NaN stays a NaN (quiet, sign kept) instead of rounding a small payload into infinity; finite values
 * past the BF16 range round to ±inf, as IEEE rounding says. Works on bits, so signalling NaNs reach it.
 */
export function bf16FromBits(bits: number): number {
  if ((bits & 0x7fffffff) > 0x7f800000) return (bits >>> 16) | 0x0040;
  // Sums stay below 2^32 for every non-NaN input, so `>>> 16` sees no wrap-around.
  return (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
}

/** float32 value → BF16 bits. */
export function bf16Bits(value: number): number {
  f32[0] = value;
  return bf16FromBits(u32[0]);
}

/** The value float32 `value` has once stored as BF16. */
export function roundToBf16(value: number): number {
  u32[0] = bf16Bits(value) << 16;
  return f32[0];
}

/** Little-endian bytes of `data` as `dtype`: a view for F32 (no copy), a new buffer for BF16. */
export function encode(dtype: WritableDType, data: Float32Array): Uint8Array {
  if (dtype === 'F32') {
    const view = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    return BIG_ENDIAN ? Buffer.from(view).swap32() : view;
  }
  const bits = new Uint32Array(data.buffer, data.byteOffset, data.length);
  const h = new Uint16Array(data.length);
  for (let i = 0; i < data.length; i++) h[i] = bf16FromBits(bits[i]);
  const out = Buffer.from(h.buffer, h.byteOffset, h.byteLength);
  return BIG_ENDIAN ? out.swap16() : out;
}

export function bytesPerElement(dtype: WritableDType): number {
  return safetensorsBytes(dtype);
}
