// Tensor: a shape, a dtype, a device and the storage. On the CPU the storage is a Float32Array in
// row-major order; the kernels read and write it in place, so a training step copies nothing. On the
// CUDA device it is a DeviceStorage (lib/device/storage.ts) in float32, bfloat16 or float16; moving
// between the two is always explicit (.to(), dataSync(), data()).
import { Device, DType } from './dtype';
import { place } from './placement';
import { DeviceStorage } from './backends/cuda/storage';
import { fail, LoraError } from './errors';
import { allocFloats, checkOptions, checkShape, optionKeys, shapeString } from './validate';

export type { Device, DType } from './dtype';

export interface TensorOptions {
  /** 'float32' (default); 'bfloat16' and 'float16' on the CUDA device only. */
  dtype?: DType;
  /** 'cpu' (default), 'cuda', or 'auto' (CUDA where a device answers, else the CPU in float32). */
  device?: Device | 'auto';
}
const TENSOR_KEYS = optionKeys<TensorOptions>({ dtype: true, device: true });

/** Tensor.to's options. */
const TO_KEYS = optionKeys<{ dtype?: DType }>({ dtype: true });

export class Tensor {
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly device: Device;
  /** The gradient, for trainable parameters (LoRA's A and B); null elsewhere. */
  grad: Tensor | null = null;
  #data: Float32Array | null;
  #dev: DeviceStorage | null = null;

  /**
   * Wraps `data` (not a copy) as a tensor of `shape`. Prefer `tensor()`, which checks its input.
   * A DeviceStorage (internal to this package) makes a device tensor that owns one reference to it.
   */
  constructor(data: Float32Array | DeviceStorage, shape: readonly number[]) {
    this.shape = Object.freeze([...shape]);
    if (data instanceof DeviceStorage) {
      this.#data = null;
      this.#dev = data;
      this.dtype = data.dtype;
      this.device = 'cuda';
    } else {
      this.#data = data;
      this.dtype = 'float32';
      this.device = 'cpu';
    }
  }

  /** Number of elements. */
  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  get disposed(): boolean {
    return this.#data === null && (this.#dev === null || this.#dev.released);
  }

  /**
   * A copy of the values, row-major, as float32 (bfloat16 and float16 widen exactly). On the device
   * this waits for the work queued before it; data() waits without blocking the event loop.
   */
  dataSync(): Float32Array {
    if (this.#dev !== null) return this.#dev.download('Tensor.dataSync');
    return this.buffer('Tensor.dataSync').slice();
  }

  /** A copy of the values, row-major, as float32; on the device the copy waits off the JS thread. */
  async data(): Promise<Float32Array> {
    if (this.#dev !== null) return this.#dev.downloadAsync('Tensor.data');
    return this.dataSync();
  }

  /**
   * Releases the storage (and the grad's). Using the tensor afterwards is ERR_DISPOSED; disposing
   * twice is harmless. Device memory goes back to the caching allocator at once, unless a reshape of
   * this tensor still uses it (then with the last of them).
   */
  dispose(): void {
    this.#data = null;
    if (this.#dev !== null) {
      this.#dev.release();
      this.#dev = null;
    }
    this.grad?.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /**
   * The storage itself, for this package's CPU kernels: callers must not keep it past the tensor's
   * life. `where` names the caller (and argument) for the messages: ERR_DISPOSED for a disposed
   * tensor, ERR_DEVICE for a cuda one (nothing is copied back behind the caller's back).
   */
  buffer(where = 'Tensor'): Float32Array {
    if (this.#data === null) {
      if (this.#dev !== null) {
        throw new LoraError('ERR_DEVICE', `${where}: expected a cpu tensor (this runs on the CPU) but received a cuda tensor (${this.dtype}, shape ${shapeString(this.shape)}); copy it with .to('cpu')`);
      }
      throw new LoraError('ERR_DISPOSED', `${where}: expected a live tensor but received a disposed one (shape ${shapeString(this.shape)})`);
    }
    return this.#data;
  }

  /**
   * The device storage, for this package's CUDA ops (internal, as buffer() is for the CPU ones).
   * ERR_DEVICE for a CPU tensor, ERR_DISPOSED for a disposed one.
   */
  deviceStorage(where = 'Tensor'): DeviceStorage {
    const s = this.#dev;
    if (s === null || s.released) {
      if (this.#data !== null) {
        throw new LoraError('ERR_DEVICE', `${where}: expected a cuda tensor (this runs on the CUDA device) but received a cpu tensor (shape ${shapeString(this.shape)}); copy it with .to('cuda')`);
      }
      throw new LoraError('ERR_DISPOSED', `${where}: expected a live tensor but received a disposed one (shape ${shapeString(this.shape)})`);
    }
    return s;
  }

  /** The same storage under another shape with the same element count. */
  reshape(shape: readonly number[]): Tensor {
    const n = checkShape('Tensor.reshape', 'shape', shape);
    if (n !== this.size) fail('ERR_SHAPE', 'Tensor.reshape', 'shape', `${this.size} elements`, `${shapeString(shape)} (${n} elements)`);
    if (this.device === 'cuda') return new Tensor(this.deviceStorage('Tensor.reshape').retain(), shape);
    return new Tensor(this.buffer('Tensor.reshape'), shape);
  }

  /**
   * This tensor on `device` ('cpu', 'cuda' or 'auto') in `options.dtype` (default: float32 on the CPU,
   * this tensor's dtype on the device). Returns the tensor itself when it is already there in that
   * dtype (as PyTorch's .to does), else a copy without a .grad: 'cuda' uploads (rounding to a 16-bit
   * dtype on the device), 'cpu' downloads (waiting for the device), and a dtype change on the device
   * is a cast there.
   */
  to(device: Device | 'auto', options?: { dtype?: DType }): Tensor {
    const where = 'Tensor.to';
    const opts = checkOptions(where, options, TO_KEYS);
    const p = place(where, ['device', 'options.dtype'], device, opts.dtype, { dtype: this.dtype });
    if (p.device === this.device && p.dtype === this.dtype) {
      if (this.disposed) this.buffer(where);  // ERR_DISPOSED, as for any other use
      return this;
    }
    if (p.device === 'cpu') return new Tensor(this.deviceStorage(where).download(where), this.shape);
    if (this.device === 'cuda') {
      const src = this.deviceStorage(where);
      const dst = DeviceStorage.alloc(p.dtype, src.length);
      dst.copyFrom(src, where);
      return new Tensor(dst, this.shape);
    }
    const values = this.buffer(where);
    if (values.length !== this.size) fail('ERR_SHAPE', where, 'this', `storage of ${this.size} elements for shape ${shapeString(this.shape)}`, `${values.length} elements`);
    return new Tensor(DeviceStorage.upload(values, p.dtype), this.shape);
  }

  toString(): string {
    return `Tensor(${shapeString(this.shape)}, ${this.dtype}, ${this.device}${this.disposed ? ', disposed' : ''})`;
  }
}

/**
 * Makes a tensor. On the CPU a Float32Array is taken as the storage without a copy (so later writes
 * to it are seen by the tensor); any other typed array or a plain array of numbers is converted into
 * a new Float32Array. With `device: 'cuda'` (or 'auto' where a device answers) the values are
 * uploaded into new device memory in `dtype` (rounded to nearest even for bfloat16 and float16).
 */
export function tensor(data: Float32Array | ArrayLike<number>, shape?: readonly number[], options?: TensorOptions): Tensor {
  const where = 'tensor';
  const opts = checkOptions(where, options, TENSOR_KEYS);
  const { device, dtype } = place(where, ['options.device', 'options.dtype'], opts.device, opts.dtype);
  let values: Float32Array;
  if (data instanceof Float32Array) values = data;
  else if (ArrayBuffer.isView(data) || Array.isArray(data)) values = Float32Array.from(data as ArrayLike<number>);
  else fail('ERR_ARGUMENT', where, 'data', 'a Float32Array, another typed array or an array of numbers', data);
  const s = shape ?? [values.length];
  const n = checkShape(where, 'shape', s);
  if (n !== values.length) fail('ERR_SHAPE', where, 'data', `${n} elements for shape ${shapeString(s)}`, `${values.length} elements`);
  return device === 'cpu' ? new Tensor(values, s) : new Tensor(DeviceStorage.upload(values, dtype), s);
}

/** A tensor of zeros; `options` place it as tensor()'s do. */
export function zeros(shape: readonly number[], options?: TensorOptions): Tensor {
  const where = 'zeros';
  const opts = checkOptions(where, options, TENSOR_KEYS);
  const n = checkShape(where, 'shape', shape);
  const { device, dtype } = place(where, ['options.device', 'options.dtype'], opts.device, opts.dtype);
  if (device === 'cpu') return new Tensor(allocFloats(where, 'shape', n, shape), shape);
  const storage = DeviceStorage.alloc(dtype, n);
  storage.fill(0, where);
  return new Tensor(storage, shape);
}
