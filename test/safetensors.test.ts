// Safetensors as a specification: the bytes the reference implementation writes, exact F32 / F16 /
// BF16 conversions, BF16 rounding to nearest even, atomic writes, and every malformed file refused
// with ERR_IO before anything of a size it claims is allocated.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { Linear, loadSafetensors, LoraError, readSafetensors, writeSafetensors } from '../lib/index';
import { randomArray } from './reference';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fused-lora-st-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const tmpFile = (name = 'file.safetensors') => path.join(fs.mkdtempSync(path.join(tmp, `${n++}-`)), name);

const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
const f32 = (...v: number[]) => new Float32Array(v);

/** A file from parts: the 8-byte length (given or true), the header text as is, the data bytes. */
function rawFile(header: string | Buffer, data: number[] | Uint8Array = [], length?: bigint): Buffer {
  const json = Buffer.from(header);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(length ?? BigInt(json.length));
  return Buffer.concat([prefix, json, Buffer.from(data)]);
}

/** One F32 tensor "x" with `entry` as its header fields (defaults: shape [2], data_offsets [0, 8]). */
function oneTensor(entry: Record<string, unknown>, data: number[] = [0, 0, 0x80, 0x3f, 0, 0, 0, 0x40]): Buffer {
  return rawFile(JSON.stringify({ x: { dtype: 'F32', shape: [2], data_offsets: [0, 8], ...entry } }), data);
}

async function expectIo(source: string | Uint8Array, message: RegExp): Promise<void> {
  const err = await readSafetensors(source).then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(LoraError);
  expect(err).toMatchObject({ code: 'ERR_IO' });
  expect((err as Error).message).toMatch(message);
}

describe('the bytes on disk', () => {
  // What `safetensors.numpy.save({"x": np.array([1, 2], np.float32)})` returns, from the spec: the
  // header is compact JSON (dtype, shape, data_offsets in that order) padded with spaces to 56 bytes.
  const reference = Buffer.concat([
    Buffer.from([56, 0, 0, 0, 0, 0, 0, 0]),
    Buffer.from('{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}  '),
    Buffer.from([0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x40]),
  ]);

  it('a tiny F32 tensor is written byte for byte as the reference implementation writes it', async () => {
    const file = tmpFile();
    await writeSafetensors(file, { x: { data: f32(1, 2), shape: [2] } });
    expect(fs.readFileSync(file).equals(reference)).toBe(true);
  });

  it('the reference bytes read back as the tensor, from a file and from a buffer', async () => {
    const file = tmpFile();
    fs.writeFileSync(file, reference);
    for (const src of [file, reference]) {
      const { tensors, metadata } = await readSafetensors(src);
      expect(Object.keys(tensors)).toEqual(['x']);
      expect(tensors.x).toEqual({ dtype: 'F32', shape: [2], data: f32(1, 2) });
      expect(metadata).toEqual({});
    }
  });

  it('__metadata__ comes first, tensors sorted by name with data in that order, as the reference does', async () => {
    const file = tmpFile();
    await writeSafetensors(file, { b: { data: new Float32Array(6), shape: [2, 3] }, a: { data: f32(1.5), shape: [1, 1] }, 0: { data: f32(), shape: [0] } }, { metadata: { format: 'pt' } });
    const bytes = fs.readFileSync(file);
    const len = Number(bytes.readBigUInt64LE(0));
    expect(bytes.subarray(8, 8 + len).toString()).toBe(
      '{"__metadata__":{"format":"pt"},"0":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"a":{"dtype":"F32","shape":[1,1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[2,3],"data_offsets":[4,28]}}    ',
    );
    expect(bytes.length).toBe(8 + len + 28);
    expect(bytes.readFloatLE(8 + len)).toBe(1.5);
  });

  it.each([1, 2, 3, 4, 5, 6, 7, 8, 9])('the header is padded with spaces to a multiple of 8 bytes (name of %i chars)', async (k) => {
    const file = tmpFile();
    await writeSafetensors(file, { ['n'.repeat(k)]: { data: f32(7), shape: [1] } });
    const bytes = fs.readFileSync(file);
    const len = Number(bytes.readBigUInt64LE(0));
    expect(len % 8).toBe(0);
    const text = bytes.subarray(8, 8 + len).toString();
    expect(text.trimEnd().endsWith('}')).toBe(true);
    expect(text.length - text.trimEnd().length).toBeLessThan(8);
    expect(/^ *$/.test(text.slice(text.trimEnd().length))).toBe(true);
    expect(bytes.length).toBe(8 + len + 4);
  });
});

describe('round trips', () => {
  it('F32 is bit-exact: -0, subnormals, extremes, NaN payloads, a scalar and an empty tensor', async () => {
    const nanPayload = new Float32Array(new Uint32Array([0x7fc01234, 0xffa00001]).buffer);
    const x = f32(0, -0, 1e-45, -1.17e-38, 3.4028234e38, -Infinity, Infinity, Math.PI, ...nanPayload);
    const W = randomArray(6 * 5, 1);
    const file = tmpFile();
    await writeSafetensors(file, { x: { data: x, shape: [x.length] }, W: { data: W, shape: [6, 5] }, s: { data: f32(42), shape: [] }, e: { data: f32(), shape: [3, 0] } });
    const { tensors } = await readSafetensors(file);
    expect(bits(tensors.x.data)).toEqual(bits(x));
    expect(bits(tensors.W.data)).toEqual(bits(W));
    expect(tensors.W.shape).toEqual([6, 5]);
    expect(tensors.s).toEqual({ dtype: 'F32', shape: [], data: f32(42) });
    expect(tensors.e).toEqual({ dtype: 'F32', shape: [3, 0], data: f32() });
  });

  it('BF16 rounds to nearest, ties to even, and reads back exactly what was stored', async () => {
    const cases: [value: number, bf16: number][] = [
      [1, 0x3f80],
      [1 + 2 ** -8, 0x3f80],            // tie between 1 and 1 + 2^-7: to the even one, 1
      [1 + 3 * 2 ** -8, 0x3f82],        // tie between 1 + 2^-7 and 1 + 2^-6: to the even one, 1 + 2^-6
      [1 + 2 ** -8 + 2 ** -20, 0x3f81], // just past the tie: up
      [1 + 2 ** -8 - 2 ** -20, 0x3f80], // just before it: down
      [-(1 + 3 * 2 ** -8), 0xbf82],
      [-0, 0x8000],
      [Infinity, 0x7f80],
      [-Infinity, 0xff80],
      [3.4e38, 0x7f80],                 // past BF16's largest finite value (3.3895e38) by more than half a step
      [2 ** -133, 0x0001],              // the smallest BF16 subnormal
      [2 ** -134, 0x0000],              // half of it: a tie, to the even zero
    ];
    const file = tmpFile();
    const data = f32(...cases.map(([v]) => v), NaN, NaN);
    new Uint32Array(data.buffer)[cases.length + 1] = 0xff800001;  // a negative signalling NaN: stays NaN
    await writeSafetensors(file, { t: { data, shape: [data.length] } }, { dtype: 'BF16' });
    const bytes = fs.readFileSync(file);
    const start = 8 + Number(bytes.readBigUInt64LE(0));
    expect(bytes.length - start).toBe(2 * data.length);
    cases.forEach(([v, want], i) => expect([v, bytes.readUInt16LE(start + 2 * i)]).toEqual([v, want]));
    const { tensors } = await readSafetensors(file);
    expect(tensors.t.dtype).toBe('BF16');
    const back = tensors.t.data;
    cases.forEach(([, want], i) => expect(bits(back.subarray(i, i + 1))[0]).toBe((want << 16) >>> 0));
    expect(Number.isNaN(back[cases.length])).toBe(true);
    expect(Number.isNaN(back[cases.length + 1])).toBe(true);
  });

  it('metadata and unusual names ("__proto__", "0", non-ASCII) round-trip as plain data', async () => {
    const file = tmpFile();
    const tensors = Object.create(null) as Record<string, { data: Float32Array; shape: number[] }>;
    for (const [i, name] of ['__proto__', '0', 'ä.weight', 'a"b'].entries()) tensors[name] = { data: f32(i), shape: [1] };
    await writeSafetensors(file, tensors, { metadata: { format: 'pt', note: 'ünïcode "quoted"' } });
    const back = await readSafetensors(file);
    expect(Object.keys(back.tensors).sort()).toEqual(['0', '__proto__', 'a"b', 'ä.weight']);
    expect(Object.getPrototypeOf(back.tensors)).toBe(Object.prototype);
    expect(back.tensors['__proto__'].data).toEqual(f32(0));
    expect(back.tensors['ä.weight'].data).toEqual(f32(2));
    expect(back.metadata).toEqual({ format: 'pt', note: 'ünïcode "quoted"' });
  });

  it('F16 is read exactly: normals, subnormals, ±0, ±inf and NaN', async () => {
    const cases: [h: number, value: number][] = [
      [0x3c00, 1], [0xc000, -2], [0x3555, 0.333251953125], [0x7bff, 65504],
      [0x0400, 2 ** -14],               // the smallest normal
      [0x0001, 2 ** -24],               // the smallest subnormal
      [0x03ff, 1023 * 2 ** -24],        // the largest subnormal
      [0x8001, -(2 ** -24)],
      [0x0000, 0], [0x7c00, Infinity], [0xfc00, -Infinity],
    ];
    const h = [...cases.map(([x]) => x), 0x8000, 0x7e00];
    const data = Buffer.alloc(2 * h.length);
    h.forEach((x, i) => data.writeUInt16LE(x, 2 * i));
    const file = tmpFile();
    fs.writeFileSync(file, rawFile(JSON.stringify({ h: { dtype: 'F16', shape: [h.length], data_offsets: [0, data.length] } }), data));
    const t = (await readSafetensors(file)).tensors.h;
    expect(t.dtype).toBe('F16');
    cases.forEach(([x, value], i) => expect([x, t.data[i]]).toEqual([x, value]));
    expect(Object.is(t.data[cases.length], -0)).toBe(true);
    expect(Number.isNaN(t.data[cases.length + 1])).toBe(true);
  });

  it('options.select reads only the tensors asked for', async () => {
    const file = tmpFile();
    await writeSafetensors(file, { a: { data: f32(1), shape: [1] }, b: { data: f32(2), shape: [1] } });
    const { tensors } = await readSafetensors(file, { select: (name) => name === 'b' });
    expect(Object.keys(tensors)).toEqual(['b']);
  });

  it('loadSafetensors gives Tensors a frozen Linear can be built from', async () => {
    const file = tmpFile();
    const W = randomArray(3 * 4, 5), bias = randomArray(3, 6);
    await writeSafetensors(file, { 'model.layers.0.q_proj.weight': { data: W, shape: [3, 4] }, 'model.layers.0.q_proj.bias': { data: bias, shape: [3] } });
    const t = await loadSafetensors(file);
    expect(t['model.layers.0.q_proj.weight'].shape).toEqual([3, 4]);
    const again = tmpFile();
    await writeSafetensors(again, t);  // Tensors are written as they are
    expect(fs.readFileSync(again).equals(fs.readFileSync(file))).toBe(true);
    const fromFile = new Linear(4, 3, { weight: t['model.layers.0.q_proj.weight'], bias: t['model.layers.0.q_proj.bias'] });
    const direct = new Linear(4, 3, { weight: W, bias });
    const x = randomArray(2 * 4, 7);
    expect(fromFile.forward(x).dataSync()).toEqual(direct.forward(x).dataSync());
  });
});

describe('writes are atomic', () => {
  it('replacing a file leaves no temporary file behind', async () => {
    const file = tmpFile();
    await writeSafetensors(file, { x: { data: f32(1), shape: [1] } });
    await writeSafetensors(file, { x: { data: f32(2), shape: [1] } });
    expect((await readSafetensors(file)).tensors.x.data).toEqual(f32(2));
    expect(fs.readdirSync(path.dirname(file))).toEqual([path.basename(file)]);
  });

  it('a write that fails halfway leaves the old file intact and removes its temporary file', async () => {
    const file = tmpFile();
    await writeSafetensors(file, { a: { data: f32(1), shape: [1] }, b: { data: f32(2), shape: [1] } });
    const before = fs.readFileSync(file);
    // b's storage fails once the header and a have gone to the temporary file.
    const b = f32(3);
    Object.defineProperty(b, 'buffer', { get: () => { throw new Error('disk on fire'); } });
    const err = await writeSafetensors(file, { a: { data: f32(9), shape: [1] }, b: { data: b, shape: [1] } }).catch((e) => e);
    expect(err).toMatchObject({ code: 'ERR_IO' });
    expect(err.message).toMatch(/disk on fire/);
    expect(fs.readFileSync(file).equals(before)).toBe(true);
    expect(fs.readdirSync(path.dirname(file))).toEqual([path.basename(file)]);
  });

  it('a target that cannot be written (a directory, a missing parent) is ERR_IO, and nothing is left', async () => {
    const dir = path.dirname(tmpFile());
    fs.mkdirSync(path.join(dir, 'taken'));
    for (const target of [path.join(dir, 'taken'), path.join(dir, 'missing', 'x.safetensors')]) {
      await expect(writeSafetensors(target, { x: { data: f32(1), shape: [1] } })).rejects.toMatchObject({ code: 'ERR_IO' });
    }
    expect(fs.readdirSync(dir)).toEqual(['taken']);
  });

  it('bad arguments are refused before any file is touched', async () => {
    const file = tmpFile();
    const cases: [unknown, unknown, string][] = [
      [{ x: { data: f32(1, 2), shape: [3] } }, undefined, 'ERR_SHAPE'],
      [{ x: { data: [1, 2], shape: [2] } }, undefined, 'ERR_DTYPE'],
      [{ x: { data: f32(1), shape: [-1] } }, undefined, 'ERR_SHAPE'],
      [{ __metadata__: { data: f32(1), shape: [1] } }, undefined, 'ERR_ARGUMENT'],
      [{ x: { data: f32(1), shape: [1] } }, { dtype: 'F16' }, 'ERR_DTYPE'],
      [{ x: { data: f32(1), shape: [1] } }, { metadata: { step: 3 } }, 'ERR_ARGUMENT'],
      [[f32(1)], undefined, 'ERR_ARGUMENT'],
    ];
    for (const [tensors, options, code] of cases) {
      await expect(writeSafetensors(file, tensors as never, options as never)).rejects.toMatchObject({ code });
    }
    expect(fs.readdirSync(path.dirname(file))).toEqual([]);
  });
});

describe('malformed files are ERR_IO, naming the file and the problem', () => {
  const good = oneTensor({});

  it('a file shorter than the 8-byte length, or cut anywhere before its end', async () => {
    const file = tmpFile();
    for (const cut of [0, 1, 7]) {
      fs.writeFileSync(file, good.subarray(0, cut));
      await expectIo(file, new RegExp(`${file}.*at least 8 bytes.*received ${cut}`));
    }
    for (const cut of [8, 20, good.length - 8, good.length - 1]) {
      fs.writeFileSync(file, good.subarray(0, cut));
      await expectIo(file, new RegExp(`^readSafetensors: ${file} is not a valid safetensors file`));
    }
  });

  it('a header length past the end of the file', async () => {
    await expectIo(rawFile('{}', [], 3n), /is not a valid safetensors file/);
    await expectIo(rawFile('{}', [], 1000n), /header length of at most 2 bytes .* received 1000/);
    await expectIo(rawFile('{}', [], 2n ** 64n - 1n), /header length/);
  });

  it('a header claiming 100 MB or more fails at once, without allocating it', async () => {
    const file = tmpFile();
    // A sparse 120 MB file: the claim fits in the file, so only the size limit can refuse it.
    fs.writeFileSync(file, rawFile('{}', [], 100_000_008n));
    fs.truncateSync(file, 120_000_000);
    const small = rawFile('{}', [], 200_000_000n);
    const alloc = vi.spyOn(Buffer, 'alloc');
    const allocUnsafe = vi.spyOn(Buffer, 'allocUnsafe');
    try {
      const started = performance.now();
      await expectIo(file, /header length of at most 100000000 bytes but received 100000008/);
      await expectIo(small, /header length of at most 100000000 bytes/);
      expect(performance.now() - started).toBeLessThan(1000);
      const sizes = [...alloc.mock.calls, ...allocUnsafe.mock.calls].map((c) => c[0] as number);
      expect(Math.max(0, ...sizes)).toBeLessThanOrEqual(8);
    } finally {
      alloc.mockRestore();
      allocUnsafe.mockRestore();
    }
  });

  it.each([
    ['not JSON', '{"x": nope}', /does not parse/],
    ['a JSON array', '[1, 2]    ', /JSON object as the header but received an array/],
    ['JSON null', 'null', /JSON object as the header but received null/],
    ['a tensor entry that is a string', '{"x":"F32"}', /expected an object for tensor "x"/],
    ['__metadata__ with a number', '{"__metadata__":{"step":3}}', /string values in __metadata__.*"step"/],
    ['__metadata__ an array', '{"__metadata__":["a"]}', /object for __metadata__/],
  ])('a header that is %s', async (_, header, message) => {
    await expectIo(rawFile(header), message);
  });

  it('a header that is not UTF-8', async () => {
    const header = Buffer.concat([Buffer.from('{"'), Buffer.from([0xff]), Buffer.from('":{}}')]);
    await expectIo(rawFile(header), /invalid UTF-8/);
  });

  it('offsets out of range, reversed, negative or not integers', async () => {
    await expectIo(oneTensor({ data_offsets: [0, 12] }), /begin <= end <= 8 .* received \[0, 12\]/);
    await expectIo(oneTensor({ data_offsets: [8, 0] }), /received \[8, 0\]/);
    await expectIo(oneTensor({ data_offsets: [-8, 0] }), /data_offsets \[begin, end\] of non-negative integers .* \[-8,0\]/);
    await expectIo(oneTensor({ data_offsets: [0.5, 8.5] }), /non-negative integers/);
    await expectIo(oneTensor({ data_offsets: [0] }), /non-negative integers/);
    await expectIo(oneTensor({ data_offsets: undefined }), /data_offsets .* received none/);
  });

  it('overlapping tensors', async () => {
    const header = JSON.stringify({
      a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
      b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
    });
    await expectIo(rawFile(header, new Array(12).fill(0)), /disjoint data_offsets .* "a" \[0, 8\] and "b" \[4, 12\]/);
  });

  it('a shape whose element count does not match the bytes', async () => {
    await expectIo(oneTensor({ shape: [3] }), /expected 12 bytes for tensor "x" \(F32 \[3\]\) .* hold 8/);
    await expectIo(oneTensor({ shape: [2, 2] }), /expected 16 bytes/);
    await expectIo(oneTensor({ shape: [2 ** 30, 2 ** 30, 2 ** 30] }), /at most 2\^53 elements/);
  });

  it('a negative, fractional or non-numeric dimension', async () => {
    for (const shape of [[-2], [-1, -2], [2.5], ['2'], 2]) {
      await expectIo(oneTensor({ shape }), /shape/);
    }
  });

  it('an unknown dtype', async () => {
    await expectIo(oneTensor({ dtype: 'F33' }), /known dtype .* received string "F33"/);
    await expectIo(oneTensor({ dtype: 7 }), /known dtype/);
  });

  it('a known but unsupported dtype, unless skipped with select', async () => {
    const file = tmpFile();
    const header = JSON.stringify({
      ids: { dtype: 'I64', shape: [1], data_offsets: [0, 8] },
      w: { dtype: 'F32', shape: [1], data_offsets: [8, 12] },
    });
    fs.writeFileSync(file, rawFile(header, [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x3f]));
    await expectIo(file, /dtype I64 is not supported \(tensor "ids"/);
    expect((await readSafetensors(file, { select: (n) => n !== 'ids' })).tensors.w.data).toEqual(f32(1));
  });

  it('duplicate keys, which JSON.parse would silently merge', async () => {
    const e = '{"dtype":"F32","shape":[2],"data_offsets":[0,8]}';
    await expectIo(rawFile(`{"x":${e},"x":${e}}`, new Array(8).fill(0)), /unique keys .* "x" twice/);
    await expectIo(rawFile(`{"x":${e},"\\u0078":${e}}`, new Array(8).fill(0)), /"x" twice/);
    await expectIo(rawFile('{"x":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}', new Array(8).fill(0)), /"dtype" twice/);
    await expectIo(rawFile('{"__metadata__":{"a":"1","a":"2"}}'), /"a" twice/);
    // Equal keys in different objects, or equal strings as values, are fine.
    const ok = await readSafetensors(rawFile('{"__metadata__":{"x":"x"},"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', new Array(8).fill(0)));
    expect(ok.metadata).toEqual({ x: 'x' });
  });

  it('a missing file or a directory', async () => {
    const dir = path.dirname(tmpFile());
    await expectIo(path.join(dir, 'none.safetensors'), /could not open .*none\.safetensors/);
    await expectIo(dir, /expected a file .* received a directory/);
  });

  it('a source that is neither a path nor bytes is ERR_ARGUMENT', async () => {
    await expect(readSafetensors(42 as never)).rejects.toMatchObject({ code: 'ERR_ARGUMENT' });
  });
});
