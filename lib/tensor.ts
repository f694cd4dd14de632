// Tensor: a shape, a dtype, a device and a storage (the interface of lib/backends/backend.ts, one
// implementation per backend: a Float32Array on the CPU, device memory on the CUDA device). The
// operations callers would otherwise branch for are the storage's, the same for every backend: zero
// in place, a host view (no copy on the CPU, a download on a device), write (host values in), and the
// liveness check. Moving between devices is always explicit (.to(), dataSync(), data()).
import './portable-types';
import type { TensorStorage } from './backends/backend';
import { backendFor, HOST } from './backends/registry';
import type { Device, DType } from './dtype';
import { fail, said } from './errors';
import { place, placementOf } from './placement';
import { checkOptions, checkShape, optionKeys, shapeString } from './validate';

export type { Device, DType } from './dtype';

export interface TensorOptions {
  /** 'float32' (default); 'bfloat16' on the CPU and the CUDA device; 'float16' on the CUDA device only. */
  dtype?: DType;
  /** 'cpu' (default), 'cuda', or 'auto' (CUDA where a device answers, else the CPU in float32). */
  device?: Device | 'auto';
}
const TENSOR_KEYS = optionKeys<TensorOptions>({ dtype: true, device: true });

/** Tensor.to's options. */
const TO_KEYS = optionKeys<{ dtype?: DType }>({ dtype: true });

/** Where a Float32Array given to the constructor lives. */
const host = backendFor(HOST);

export class Tensor {
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly device: Device;
  /** The gradient, for trainable parameters (LoRA's A and B); null elsewhere. */
  grad: Tensor | null = null;
  #storage: TensorStorage | null;

  /**
   * Wraps `data` (not a copy) as a tensor of `shape`. Prefer `tensor()`, which checks its input.
   * A TensorStorage (internal to this package) makes a tensor that owns one reference to it.
   */
  constructor(data: Float32Array | TensorStorage, shape: readonly number[]) {
    this.shape = Object.freeze([...shape]);
    const s = data instanceof Float32Array ? host.fromHost(data, 'float32', false) : data;
    this.#storage = s;
    this.dtype = s.dtype;
    this.device = s.device;
  }

  /** Number of elements. */
  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  get disposed(): boolean {
    return this.#storage === null || this.#storage.released;
  }

  /**
   * The storage, for this package's kernels: ERR_DISPOSED naming `arg` for a disposed tensor. Callers
   * must not keep it past the tensor's life.
   */
  storage(where = 'Tensor', arg = 'the tensor'): TensorStorage {
    const s = this.#storage;
    if (s === null || s.released) fail('ERR_DISPOSED', where, arg, 'a live tensor', said(`a disposed one (shape ${shapeString(this.shape)})`));
    return s;
  }

  /** ERR_DISPOSED naming `arg` unless the tensor is live. */
  assertLive(where = 'Tensor', arg = 'the tensor'): void {
    this.storage(where, arg);
  }

  /**
   * The values as host float32: the storage itself on the CPU (no copy: do not keep or write it),
   * a copy on a device (which waits for the work queued before it).
   */
  hostView(where = 'Tensor.hostView', arg = 'the tensor'): Float32Array {
    return this.storage(where, arg).hostView(where);
  }

  /** Overwrites every element with host float32 values (rounded to the dtype; an upload on a device). */
  write(values: Float32Array, where = 'Tensor.write', arg = 'the tensor'): void {
    this.storage(where, arg).write(values, where);
  }

  /** Sets every element to zero, where the tensor lives. */
  zero(where = 'Tensor.zero', arg = 'the tensor'): void {
    this.storage(where, arg).fill(0, where);
  }

  /**
   * A copy of the values, row-major, as float32 (bfloat16 and float16 widen exactly). On the device
   * this waits for the work queued before it; data() waits without blocking the event loop.
   */
  dataSync(): Float32Array {
    return this.storage('Tensor.dataSync').hostCopy('Tensor.dataSync');
  }

  /** A copy of the values, row-major, as float32; on the device the copy waits off the JS thread. */
  async data(): Promise<Float32Array> {
    return this.storage('Tensor.data').hostCopyAsync('Tensor.data');
  }

  /**
   * Releases the storage (and the grad's). Using the tensor afterwards is ERR_DISPOSED; disposing
   * twice is harmless. Device memory goes back to the caching allocator at once, unless a reshape of
   * this tensor still uses it (then with the last of them).
   */
  dispose(): void {
    this.#storage?.release();
    this.#storage = null;
    this.grad?.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /**
   * The Float32Array that is this tensor's storage, for code that works on host float32 memory (the
   * CPU's): ERR_DISPOSED for a disposed tensor, ERR_DEVICE for any other (nothing is copied back
   * behind the caller's back; hostView() copies).
   */
  buffer(where = 'Tensor', arg = 'the tensor'): Float32Array {
    const a = this.storage(where, arg).hostArray;
    if (a === null) {
      fail('ERR_DEVICE', where, arg, `a ${HOST.device} ${HOST.dtype} tensor`, said(`a ${this.device} tensor (${this.dtype}, shape ${shapeString(this.shape)})`),
        `this runs on ${host.label}: copy it with .to('${HOST.device}')`);
    }
    return a;
  }

  /** The same storage under another shape with the same element count. */
  reshape(shape: readonly number[]): Tensor {
    const n = checkShape('Tensor.reshape', 'shape', shape);
    if (n !== this.size) fail('ERR_SHAPE', 'Tensor.reshape', 'shape', `${this.size} elements`, said(`${shapeString(shape)} (${n} elements)`));
    return new Tensor(this.storage('Tensor.reshape').retain(), shape);
  }

  /**
   * This tensor on `device` ('cpu', 'cuda' or 'auto') in `options.dtype` (default: float32 on the CPU,
   * this tensor's dtype on the device). Returns the tensor itself when it is already there in that
   * dtype (as PyTorch's .to does), else a copy without a .grad: to another device through host float32
   * (an upload, or a download that waits for the device), on the same backend a cast there.
   */
  to(device: Device | 'auto', options?: { dtype?: DType }): Tensor {
    const where = 'Tensor.to';
    const opts = checkOptions(where, options, TO_KEYS);
    // Host memory defaults to float32 (dataSync's dtype); a device keeps this tensor's dtype.
    const p = place(where, ['device', 'options.dtype'], device, opts.dtype, { dtype: device === 'cpu' ? 'float32' : this.dtype });
    const src = this.storage(where);
    // A quantized weight is never returned as itself: its copy is dequantized, an ordinary tensor.
    if (p.device === this.device && p.dtype === this.dtype && !src.quantized) return this;
    if (src.length !== this.size) fail('ERR_SHAPE', where, 'the tensor', `storage of ${this.size} elements for shape ${shapeString(this.shape)}`, said(`${src.length} elements`));
    const target = backendFor(p);
    if (target === backendFor(placementOf(this))) {
      const dst = target.alloc(where, 'the copy', p.dtype, src.length, false);
      dst.copyFrom(src, where);
      return new Tensor(dst, this.shape);
    }
    return new Tensor(target.fromHost(src.hostView(where), p.dtype, false), this.shape);
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
  const p = place(where, ['options.device', 'options.dtype'], opts.device, opts.dtype);
  let values: Float32Array;
  if (data instanceof Float32Array) values = data;
  else if (ArrayBuffer.isView(data) || Array.isArray(data)) values = Float32Array.from(data as ArrayLike<number>);
  else fail('ERR_ARGUMENT', where, 'data', 'a Float32Array, another typed array or an array of numbers', data);
  const s = shape ?? [values.length];
  const n = checkShape(where, 'shape', s);
  if (n !== values.length) fail('ERR_SHAPE', where, 'data', `${n} elements for shape ${shapeString(s)}`, said(`${values.length} elements`));
  return new Tensor(backendFor(p).fromHost(values, p.dtype, false), s);
}

/** A tensor of zeros; `options` place it as tensor()'s do. */
export function zeros(shape: readonly number[], options?: TensorOptions): Tensor {
  const where = 'zeros';
  const opts = checkOptions(where, options, TENSOR_KEYS);
  const n = checkShape(where, 'shape', shape);
  const p = place(where, ['options.device', 'options.dtype'], opts.device, opts.dtype);
  return new Tensor(backendFor(p).alloc(where, `shape ${shapeString(shape)}`, p.dtype, n, true), shape);
}
