// The storages of the reduced-precision CPU backend. Bf16Storage: a tensor in bfloat16, a Uint16Array
// of bf16 bits (half the bytes of float32). QuantStorage: a frozen weight (O, I) held compressed, as
// int8 codes with one fp32 scale per output channel or as nf4 codes (two per byte) with one fp32
// absmax per block of 64 along I (native/include/fused_lora/lowp.h). Neither is host float32
// (hostArray is null): hostView and hostCopy convert, writes round (bf16) or quantize anew.
import type { DType, TensorStorage } from '../backend';
import { fail, said } from '../../errors';
import { lowp, Quantize, WeightArgs } from './binding';

export class Bf16Storage implements TensorStorage {
  readonly device = 'cpu' as const;
  readonly dtype = 'bfloat16' as const;
  readonly data: Uint16Array;
  version = 0;

  constructor(data: Uint16Array) {
    this.data = data;
  }

  /** float32 values rounded to nearest even. */
  static fromFloats(values: Float32Array): Bf16Storage {
    const s = new Bf16Storage(new Uint16Array(values.length));
    if (values.length > 0) lowp.toBf16({ src: values, dst: s.data, n: values.length });
    return s;
  }

  get length(): number { return this.data.length; }
  get released(): boolean { return false; }
  get hostArray(): null { return null; }

  hostView(): Float32Array {
    const out = new Float32Array(this.data.length);
    if (out.length > 0) lowp.fromBf16({ src: this.data, dst: out, n: out.length });
    return out;
  }

  hostCopy(): Float32Array { return this.hostView(); }
  async hostCopyAsync(): Promise<Float32Array> { return this.hostView(); }

  write(values: Float32Array, where: string): void {
    if (values.length !== this.data.length) fail('ERR_SHAPE', where, 'the values', `${this.data.length} elements`, said(`${values.length}`));
    if (values.length > 0) lowp.toBf16({ src: values, dst: this.data, n: values.length });
    this.version++;
  }

  fill(value: number): void {
    const one = new Uint16Array(1);
    lowp.toBf16({ src: new Float32Array([value]), dst: one, n: 1 });
    this.data.fill(one[0]);
    this.version++;
  }

  copyFrom(src: TensorStorage, where: string): void {
    if (src instanceof Bf16Storage && src.length === this.length) {
      this.data.set(src.data);
      this.version++;
      return;
    }
    this.write(src.hostView(where), where);
  }

  overlaps(other: TensorStorage): boolean {
    const mem = other instanceof Bf16Storage ? other.data : other.hostArray;
    return mem !== null && overlaps(this.data, mem);
  }

  residentBytes(): number { return this.data.byteLength; }
  markWritten(): void { this.version++; }
  retain(): this { return this; }
  release(): void {}
}

/**
 * A frozen weight (O, I) in int8 or nf4; its dtype is the layer's activation dtype (the values it
 * stands for are read as that). Its values, for hostView and for the GEMMs alike, are Ŵ: the codes
 * times their scale, in fp32, rounded to bf16.
 */
export class QuantStorage implements TensorStorage {
  readonly device = 'cpu' as const;
  readonly dtype: DType;
  readonly format: Quantize;
  readonly O: number;
  get quantized(): Quantize { return this.format; }
  readonly I: number;
  /** int8: (O·I) codes; nf4: (O·I / 2) bytes, the even element in the high nibble. */
  readonly q: Int8Array | Uint8Array;
  /** int8: (O) scales, max|W[o, :]| / 127; nf4: (O·I / 64) block absmax. */
  readonly scale: Float32Array;
  version = 0;

  private constructor(format: Quantize, dtype: DType, O: number, I: number) {
    this.format = format;
    this.dtype = dtype;
    this.O = O;
    this.I = I;
    const n = O * I;
    this.q = format === 'int8' ? new Int8Array(n) : new Uint8Array(Math.ceil(n / 2));
    this.scale = new Float32Array(format === 'int8' ? O : n / 64);
  }

  /** W (O, I) quantized; the caller has checked the format and, for nf4, that I % 64 === 0. */
  static quantize(format: Quantize, dtype: DType, W: Float32Array, O: number, I: number): QuantStorage {
    const s = new QuantStorage(format, dtype, O, I);
    s.#quantize(W);
    return s;
  }

  get length(): number { return this.O * this.I; }
  get released(): boolean { return false; }
  get hostArray(): null { return null; }

  /** The addon's arguments for this weight. */
  weightArgs(): WeightArgs {
    return this.format === 'int8'
      ? { wFormat: 'int8', W: this.q as Int8Array, wScale: this.scale }
      : { wFormat: 'nf4', W: this.q as Uint8Array, wAbsmax: this.scale };
  }

  hostView(): Float32Array {
    const out = new Float32Array(this.length);
    if (out.length > 0) lowp.dequantize({ ...this.weightArgs(), O: this.O, I: this.I, out });
    return out;
  }

  hostCopy(): Float32Array { return this.hostView(); }
  async hostCopyAsync(): Promise<Float32Array> { return this.hostView(); }

  /** Quantizes `values` anew (a merge asked to re-quantize, a copy into this weight). */
  write(values: Float32Array, where: string): void {
    if (values.length !== this.length) fail('ERR_SHAPE', where, 'the values', `${this.length} elements`, said(`${values.length}`));
    this.#quantize(values);
    this.version++;
  }

  fill(value: number, where: string): void {
    this.write(new Float32Array(this.length).fill(value), where);
  }

  copyFrom(src: TensorStorage, where: string): void {
    this.write(src.hostView(where), where);
  }

  overlaps(other: TensorStorage): boolean {
    return other === this;
  }

  residentBytes(): number { return this.q.byteLength + this.scale.byteLength; }
  markWritten(): void { this.version++; }
  retain(): this { return this; }
  release(): void {}

  #quantize(W: Float32Array): void {
    if (this.length > 0) lowp.quantize({ format: this.format, W, O: this.O, I: this.I, q: this.q, scale: this.scale });
  }
}

function overlaps(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return a.buffer === b.buffer && a.byteLength > 0 && b.byteLength > 0 &&
    a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}
