// The storage of a device tensor: one DeviceBuffer from the CUDA addon's caching allocator, its
// dtype and element count. Tensors that share it (reshape) count references: the last dispose()
// gives the buffer back at once. The DeviceBuffer's own finalizer is the safety net for storage
// nobody disposed (it frees the memory when the GC collects the buffer), and the addon reports the
// bytes to V8, so the GC feels device memory as pressure.
//
// `version` counts writes made through this package (uploads, fills, optimizer steps): a layer that
// keeps a derived copy (W_ext holds W, scaling·Bᵀ and Aᵀ) compares versions to know when to refresh.
import { cudaBinding, DeviceBuffer } from './binding';
import { LoraError } from '../../errors';
import { DType, elementBytes } from '../../dtype';

export class DeviceStorage {
  readonly dtype: DType;
  /** Elements (row-major); a zero-size storage still holds a one-element buffer. */
  readonly length: number;
  /** Writes through this package so far (see the file's header). */
  version = 0;
  #buffer: DeviceBuffer | null;
  #refs = 1;
  /** downloadAsync calls in flight: the buffer outlives them even when released meanwhile. */
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

  /** A copy of host float32 values on the device, rounded to `dtype` there. */
  static upload(values: Float32Array, dtype: DType): DeviceStorage {
    const s = DeviceStorage.alloc(dtype, values.length);
    s.write(values);
    return s;
  }

  get released(): boolean {
    return this.#refs <= 0 || this.#buffer === null || this.#buffer.disposed;
  }

  /** The buffer, for the addon's ops; ERR_DISPOSED once released. */
  buffer(where: string): DeviceBuffer {
    const b = this.#buffer;
    if (b === null || b.disposed || this.#refs <= 0) throw new LoraError('ERR_DISPOSED', `${where}: expected a live tensor but received a disposed one (its device memory was released)`);
    return b;
  }

  /** One more tensor shares this storage. */
  retain(): this {
    this.#refs++;
    return this;
  }

  /** One tensor less; the last one gives the memory back (after any download in flight). */
  release(): void {
    if (this.#buffer === null || --this.#refs > 0) return;
    if (this.#reading === 0) this.#free();
  }

  /** A host copy as float32 (16-bit values widened exactly). Waits for the device. */
  download(where: string): Float32Array {
    if (this.length === 0) return new Float32Array(0);
    return cudaBinding().download({ buffer: this.buffer(where), dtype: this.dtype, rows: 1, cols: this.length });
  }

  /** download() without blocking the event loop: the wait happens on a worker thread. */
  async downloadAsync(where: string): Promise<Float32Array> {
    if (this.length === 0) return new Float32Array(0);
    const buffer = this.buffer(where);
    this.#reading++;
    try {
      return await cudaBinding().downloadAsync({ buffer, dtype: this.dtype, rows: 1, cols: this.length });
    } finally {
      if (--this.#reading === 0 && this.#refs <= 0) this.#free();
    }
  }

  /** Overwrites every element with host values (rounded to the dtype on the device). */
  write(values: Float32Array, where = 'DeviceStorage.write'): void {
    if (values.length !== this.length) throw new LoraError('ERR_SHAPE', `${where}: expected ${this.length} elements but received ${values.length}`);
    if (this.length > 0) cudaBinding().upload({ buffer: this.buffer(where), dtype: this.dtype, data: values, rows: 1, cols: this.length });
    this.version++;
  }

  /** Sets every element to `value`. */
  fill(value: number, where = 'DeviceStorage.fill'): void {
    if (this.length > 0) cudaBinding().fill({ buffer: this.buffer(where), dtype: this.dtype, rows: 1, cols: this.length, value });
    this.version++;
  }

  /** Overwrites this storage with `src`'s elements, converted to this dtype on the device. */
  copyFrom(src: DeviceStorage, where = 'DeviceStorage.copyFrom'): void {
    if (src.length !== this.length) throw new LoraError('ERR_SHAPE', `${where}: expected ${this.length} elements but received ${src.length}`);
    if (this.length > 0) {
      cudaBinding().cast({ dst: this.buffer(where), dstDtype: this.dtype, src: src.buffer(where), srcDtype: src.dtype, rows: 1, cols: this.length });
    }
    this.version++;
  }

  /** Records a write made by a kernel (an optimizer step): derived copies refresh from it. */
  markWritten(): void {
    this.version++;
  }

  #free(): void {
    const b = this.#buffer;
    this.#buffer = null;
    b?.dispose();
  }
}
