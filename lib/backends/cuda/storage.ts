// The storage of a device tensor: one DeviceBuffer from the CUDA addon's caching allocator, its
// dtype and element count. Tensors that share it (reshape) count references: the last release()
// gives the buffer back at once. The DeviceBuffer's own finalizer is the safety net for storage
// nobody disposed (it frees the memory when the GC collects the buffer), and the addon reports the
// bytes to V8, so the GC feels device memory as pressure.
import type { TensorStorage } from '../backend';
import { DType, elementBytes } from '../../dtype';
import { fail, said } from '../../errors';
import { cudaBinding, DeviceBuffer } from './binding';

export class DeviceStorage implements TensorStorage {
  readonly device = 'cuda' as const;
  readonly dtype: DType;
  /** Elements (row-major); a zero-size storage still holds a one-element buffer. */
  readonly length: number;
  version = 0;
  #buffer: DeviceBuffer | null;
  #refs = 1;
  /** hostCopyAsync calls in flight: the buffer outlives them even when released meanwhile. */
  #reading = 0;

  private constructor(buffer: DeviceBuffer, dtype: DType, length: number) {
    this.#buffer = buffer;
    this.dtype = dtype;
    this.length = length;
  }

  /** New, uninitialised device memory for `length` elements of `dtype`. */
  static alloc(dtype: DType, length: number): DeviceStorage {
    return new DeviceStorage(cudaBinding().alloc(Math.max(1, length) * elementBytes(dtype)), dtype, length);
  }

  get released(): boolean {
    return this.#refs <= 0 || this.#buffer === null || this.#buffer.disposed;
  }

  get hostArray(): null {
    return null;
  }

  /** The buffer, for the addon's ops; ERR_DISPOSED once released. */
  buffer(where: string): DeviceBuffer {
    const b = this.#buffer;
    if (b === null || b.disposed || this.#refs <= 0) fail('ERR_DISPOSED', where, '', 'a live tensor', said('a disposed one (its device memory was released)'));
    return b;
  }

  retain(): this {
    this.#refs++;
    return this;
  }

  /** The last release gives the memory back (after any copy to the host in flight). */
  release(): void {
    if (this.#buffer === null || --this.#refs > 0) return;
    if (this.#reading === 0) this.#free();
  }

  /** A download: waits for the work queued before it. */
  hostView(where: string): Float32Array {
    return this.hostCopy(where);
  }

  hostCopy(where: string): Float32Array {
    if (this.length === 0) return new Float32Array(0);
    return cudaBinding().download({ buffer: this.buffer(where), dtype: this.dtype, rows: 1, cols: this.length });
  }

  /** The download's wait happens on a worker thread. */
  async hostCopyAsync(where: string): Promise<Float32Array> {
    if (this.length === 0) return new Float32Array(0);
    const buffer = this.buffer(where);
    this.#reading++;
    try {
      return await cudaBinding().downloadAsync({ buffer, dtype: this.dtype, rows: 1, cols: this.length });
    } finally {
      if (--this.#reading === 0 && this.#refs <= 0) this.#free();
    }
  }

  /** An upload, rounded to the dtype on the device. */
  write(values: Float32Array, where: string): void {
    if (values.length !== this.length) fail('ERR_SHAPE', where, 'the values', `${this.length} elements`, said(`${values.length}`));
    if (this.length > 0) cudaBinding().upload({ buffer: this.buffer(where), dtype: this.dtype, data: values, rows: 1, cols: this.length });
    this.version++;
  }

  fill(value: number, where: string): void {
    if (this.length > 0) cudaBinding().fill({ buffer: this.buffer(where), dtype: this.dtype, rows: 1, cols: this.length, value });
    this.version++;
  }

  /** A cast on the device (`src` is device storage too: the registry gives one backend per placement). */
  copyFrom(src: TensorStorage, where: string): void {
    if (src.length !== this.length) fail('ERR_SHAPE', where, 'the source', `${this.length} elements`, said(`${src.length}`));
    if (this.length > 0) {
      cudaBinding().cast({ dst: this.buffer(where), dstDtype: this.dtype, src: (src as DeviceStorage).buffer(where), srcDtype: src.dtype, rows: 1, cols: this.length });
    }
    this.version++;
  }

  /** Device storages share memory only as one object (reshape retains it). */
  overlaps(other: TensorStorage): boolean {
    return other === this;
  }

  markWritten(): void {
    this.version++;
  }

  #free(): void {
    const b = this.#buffer;
    this.#buffer = null;
    b?.dispose();
  }
}

/** An operand's device buffer: every storage of this backend is a DeviceStorage (registry.ts). */
export function buf(where: string, o: { readonly storage: TensorStorage }): DeviceBuffer {
  return (o.storage as DeviceStorage).buffer(where);
}
