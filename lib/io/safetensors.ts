// Safetensors, read and written by this package (no dependency): F32, F16 and BF16 in, F32 and BF16
// out, every tensor as float32 in memory. A file is read header first, then tensor by tensor straight
// into its Float32Array, so a large checkpoint costs its float32 size and nothing more; a header is
// checked in full (safetensors-header.ts) before any size it claims is allocated. Writes are atomic.
import fs from 'node:fs/promises';
import { errorAt, fail, LoraError, said } from '../errors';
import { Bf16Storage } from '../backends/cpu-lowp';
import { Tensor } from '../tensor';
import { checkOptions, checkShape, optionKeys, shapeString } from '../validate';
import { writeFileAtomic } from './atomic';
import { SAFETENSORS_DTYPES } from '../dtype';
import { bytesPerElement, checkWritable, decodeInto, encode, isReadable, WritableDType } from './dtype';
import { setOwn } from './own';
import { Header, headerLength, Invalid, parseHeader } from './safetensors-header';

export type { ReadableDType, WritableDType } from './dtype';

export interface SafetensorsTensor {
  /** The dtype in the file; `data` holds the values converted (exactly) to float32. */
  dtype: string;
  shape: number[];
  data: Float32Array;
}

export interface SafetensorsContents {
  tensors: Record<string, SafetensorsTensor>;
  /** The header's __metadata__ ({} when absent). */
  metadata: Record<string, string>;
}

export interface ReadSafetensorsOptions {
  /** Reads only the tensors for which this returns true (the header is still checked in full). */
  select?: (name: string) => boolean;
}
const READ_KEYS = optionKeys<ReadSafetensorsOptions>({ select: true });

export interface WriteSafetensorsOptions {
  /** 'F32' (default) or 'BF16' (rounded to nearest, ties to even). */
  dtype?: WritableDType;
  /** Stored as the header's __metadata__. */
  metadata?: Record<string, string>;
}
const WRITE_KEYS = optionKeys<WriteSafetensorsOptions>({ dtype: true, metadata: true });

/** One read() per call returns at most 2 GiB; we ask for 1 GiB at a time. */
const CHUNK = 2 ** 30;

interface Source {
  label: string;
  size: number;
  /** Fills `into` from byte `position`; ERR_IO if the source ends first. */
  read(into: Uint8Array, position: number): Promise<void>;
  close(): Promise<void>;
}

/** Reads a safetensors file (a path, or its bytes). Every problem with the file is ERR_IO. */
export function readSafetensors(source: string | Uint8Array, options?: ReadSafetensorsOptions): Promise<SafetensorsContents> {
  return read('readSafetensors', source, options);
}

export interface LoadSafetensorsOptions extends ReadSafetensorsOptions {
  /**
   * 'float32' (default): every tensor as float32. 'bfloat16': BF16 tensors stay bfloat16 CPU tensors
   * (their bits as stored; half the memory of float32 once loaded), F32 and F16 ones float32.
   */
  dtype?: 'float32' | 'bfloat16';
}
const LOAD_KEYS = optionKeys<LoadSafetensorsOptions>({ select: true, dtype: true });

/** Reads a safetensors file into Tensors by name, e.g. to build a frozen model from a checkpoint. */
export async function loadSafetensors(file: string | Uint8Array, options?: LoadSafetensorsOptions): Promise<Record<string, Tensor>> {
  const where = 'loadSafetensors';
  const { dtype, ...readOptions } = checkOptions(where, options, LOAD_KEYS);
  if (dtype !== undefined && dtype !== 'float32' && dtype !== 'bfloat16') fail('ERR_DTYPE', where, 'options.dtype', "'float32' or 'bfloat16'", dtype);
  const { tensors } = await read(where, file, readOptions);
  const out: Record<string, Tensor> = {};
  for (const [name, t] of Object.entries(tensors)) {
    // A BF16 value widened to float32 rounds back to itself: the bits are the file's.
    const keep = dtype === 'bfloat16' && t.dtype === 'BF16';
    setOwn(out, name, keep ? new Tensor(Bf16Storage.fromFloats(t.data), t.shape) : new Tensor(t.data, t.shape));
  }
  return out;
}

/** `read` with the caller's name in its errors (loadAdapter uses it too). */
export async function read(where: string, source: string | Uint8Array, options?: ReadSafetensorsOptions): Promise<SafetensorsContents> {
  const opts = checkOptions(where, options, READ_KEYS);
  if (opts.select !== undefined && typeof opts.select !== 'function') fail('ERR_ARGUMENT', where, 'options.select', 'a function', opts.select);
  const src = await open(where, source);
  try {
    const invalid: Invalid = (what) => {
      throw errorAt('ERR_IO', where, `${src.label} is not a valid safetensors file: ${what}`);
    };
    const prefix = Buffer.alloc(8);
    if (src.size >= 8) await src.read(prefix, 0);
    const n = headerLength(prefix, src.size, invalid);
    const json = Buffer.alloc(n);
    await src.read(json, 8);
    const header = parseHeader(json, src.size - 8 - n, invalid);
    return { tensors: await readTensors(where, src, header, 8 + n, opts.select), metadata: header.metadata };
  } finally {
    await src.close();
  }
}

async function readTensors(where: string, src: Source, header: Header, dataStart: number, select?: (name: string) => boolean): Promise<Record<string, SafetensorsTensor>> {
  const wanted = header.entries.filter((e) => !select || select(e.name));
  // Refuse an unsupported dtype before reading anything.
  for (const e of wanted) {
    if (!isReadable(e.dtype)) {
      throw errorAt('ERR_IO', where, `${src.label}: dtype ${e.dtype} is not supported (tensor ${JSON.stringify(e.name)}; ${SAFETENSORS_DTYPES.join(', ')} are; options.select can skip it)`);
    }
  }
  const out: Record<string, SafetensorsTensor> = {};
  for (const e of wanted) {
    let data: Float32Array, raw: Buffer;
    try {
      data = new Float32Array(e.count);
      // F32 is read straight into the result; 16-bit dtypes into an aligned scratch array.
      raw = e.dtype === 'F32' ? Buffer.from(data.buffer) : Buffer.from(new Uint16Array(e.count).buffer);
    } catch (err) {
      throw errorAt('ERR_IO', where, `${src.label}: tensor ${JSON.stringify(e.name)} of shape ${shapeString(e.shape)} is larger than this process can allocate`, err);
    }
    await src.read(raw, dataStart + e.begin);
    decodeInto(e.dtype as 'F32' | 'F16' | 'BF16', raw, data);
    setOwn(out, e.name, { dtype: e.dtype, shape: [...e.shape], data });
  }
  return out;
}

async function open(where: string, source: unknown): Promise<Source> {
  if (source instanceof Uint8Array) {
    const bytes = source;
    return {
      label: `the given ${bytes.byteLength}-byte buffer`,
      size: bytes.byteLength,
      async read(into, position) {
        into.set(bytes.subarray(position, position + into.byteLength));
      },
      async close() {},
    };
  }
  if (typeof source !== 'string' || source === '') fail('ERR_ARGUMENT', where, 'file', 'a path or a Uint8Array', source);
  const file = source;
  let handle: fs.FileHandle;
  let size: number;
  try {
    handle = await fs.open(file, 'r');
  } catch (e) {
    throw errorAt('ERR_IO', where, `could not open ${file}`, e);
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) fail('ERR_IO', where, file, 'a file', said(`a ${st.isDirectory() ? 'directory' : 'special file'}`));
    size = st.size;
  } catch (e) {
    await handle.close();
    throw e instanceof LoraError ? e : errorAt('ERR_IO', where, `could not read ${file}`, e);
  }
  return {
    label: file,
    size,
    async read(into, position) {
      for (let done = 0; done < into.byteLength;) {
        let got: number;
        try {
          ({ bytesRead: got } = await handle.read(into, done, Math.min(CHUNK, into.byteLength - done), position + done));
        } catch (e) {
          throw errorAt('ERR_IO', where, `could not read ${file}`, e);
        }
        if (got === 0) throw errorAt('ERR_IO', where, `${file} ended at byte ${position + done} while ${position + into.byteLength} were expected (did it change while being read?)`);
        done += got;
      }
    },
    close: () => handle.close(),
  };
}

/**
 * Writes float32 tensors (Tensors, or { data, shape }) as a safetensors file, laid out as the
 * reference implementation does:
 * tensors sorted by name, data in that order, the JSON header compact and padded with spaces to a
 * multiple of 8 bytes. Atomic: a temporary file in the same directory, fsync'ed, renamed into place.
 * F32 data is written from the arrays themselves (no copy): leave them unchanged until this resolves.
 */
export async function writeSafetensors(file: string, tensors: Record<string, Tensor | { data: Float32Array; shape: readonly number[] }>, options?: WriteSafetensorsOptions): Promise<void> {
  const where = 'writeSafetensors';
  if (typeof file !== 'string' || file === '') fail('ERR_ARGUMENT', where, 'file', 'a non-empty path', file);
  const opts = checkOptions(where, options, WRITE_KEYS);
  const dtype = checkWritable(where, 'options.dtype', opts.dtype);
  const metadata = opts.metadata === undefined ? null : checkMetadata(where, opts.metadata);
  const entries = checkTensors(where, tensors);
  const header = encodeHeader(entries, dtype, metadata);
  await writeFileAtomic(where, file, async (put) => {
    await put(header);
    for (const e of entries) await put(encode(dtype, e.data));
  });
}

function checkTensors(where: string, tensors: unknown): { name: string; data: Float32Array; shape: readonly number[] }[] {
  if (tensors === null || typeof tensors !== 'object' || Array.isArray(tensors)) fail('ERR_ARGUMENT', where, 'tensors', 'an object of { data, shape } by name', tensors);
  const entries = Object.entries(tensors as Record<string, unknown>).map(([name, t]) => {
    const arg = `tensors[${JSON.stringify(name)}]`;
    if (name === '' || name === '__metadata__') fail('ERR_ARGUMENT', where, 'tensors', 'names other than "" and "__metadata__"', name);
    if (t === null || typeof t !== 'object') fail('ERR_ARGUMENT', where, arg, 'a Tensor or an object { data, shape }', t);
    const { data, shape } = t instanceof Tensor ? { data: t.buffer(`${where}: ${arg}`), shape: t.shape } : (t as { data: unknown; shape: unknown });
    if (!(data instanceof Float32Array)) fail('ERR_DTYPE', where, `${arg}.data`, 'a Float32Array', data);
    const n = checkShape(where, `${arg}.shape`, shape);
    if (n !== data.length) fail('ERR_SHAPE', where, `${arg}.data`, `${n} elements for shape ${shapeString(shape as number[])}`, said(`${data.length} elements`));
    return { name, data, shape: shape as number[] };
  });
  // The reference sorts by name as UTF-8 bytes; JS's default sort compares UTF-16 units.
  const key = new Map(entries.map((e) => [e.name, Buffer.from(e.name)]));
  return entries.sort((a, b) => Buffer.compare(key.get(a.name)!, key.get(b.name)!));
}

function checkMetadata(where: string, metadata: unknown): Record<string, string> {
  if (metadata === null || typeof metadata !== 'object' || Array.isArray(metadata)) fail('ERR_ARGUMENT', where, 'options.metadata', 'an object of strings', metadata);
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== 'string') fail('ERR_ARGUMENT', where, `options.metadata[${JSON.stringify(k)}]`, 'a string', v);
  }
  return metadata as Record<string, string>;
}

/** The 8-byte length and the JSON, built by hand: JSON.stringify would move keys like "0" first. */
function encodeHeader(entries: { name: string; shape: readonly number[] }[], dtype: WritableDType, metadata: Record<string, string> | null): Buffer {
  const parts: string[] = [];
  if (metadata !== null) {
    const kv = Object.keys(metadata).sort().map((k) => `${JSON.stringify(k)}:${JSON.stringify(metadata[k])}`);
    parts.push(`"__metadata__":{${kv.join(',')}}`);
  }
  let offset = 0;
  for (const e of entries) {
    const bytes = e.shape.reduce((a, b) => a * b, 1) * bytesPerElement(dtype);
    parts.push(`${JSON.stringify(e.name)}:{"dtype":"${dtype}","shape":[${e.shape.join(',')}],"data_offsets":[${offset},${offset + bytes}]}`);
    offset += bytes;
  }
  const json = Buffer.from(`{${parts.join(',')}}`);
  const padded = Math.ceil(json.length / 8) * 8;
  const out = Buffer.alloc(8 + padded, 0x20);  // spaces: the reference pads the header with them
  out.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(out, 8);
  return out;
}
