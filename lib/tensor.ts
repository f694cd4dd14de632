// Tensor: a shape, a dtype, a device and the storage. On the CPU the storage is a Float32Array in
// row-major order; the kernels read and write it in place, so a training step copies nothing.
import { LoraError } from './errors';
import { checkShape, fail, shapeString } from './validate';

export type DType = 'float32';
export type Device = 'cpu';

export interface TensorOptions {
  dtype?: DType;
  device?: Device | 'auto';
}

export class Tensor {
  readonly shape: readonly number[];
  readonly dtype: DType = 'float32';
  readonly device: Device = 'cpu';
  /** The gradient, for trainable parameters (LoRA's A and B); null elsewhere. */
  grad: Tensor | null = null;
  #data: Float32Array | null;

  /** Wraps `data` (not a copy) as a tensor of `shape`. Prefer `tensor()`, which checks its input. */
  constructor(data: Float32Array, shape: readonly number[]) {
    this.#data = data;
    this.shape = Object.freeze([...shape]);
  }

  /** Number of elements. */
  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  get disposed(): boolean {
    return this.#data === null;
  }

  /** A copy of the values, row-major. */
  dataSync(): Float32Array {
    return this.buffer('Tensor.dataSync').slice();
  }

  /** A copy of the values, row-major (a Promise, for symmetry with device tensors). */
  async data(): Promise<Float32Array> {
    return this.dataSync();
  }

  /** Releases the storage. Using the tensor afterwards is ERR_DISPOSED; disposing twice is harmless. */
  dispose(): void {
    this.#data = null;
    this.grad?.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /**
   * The storage itself, for this package's kernels: callers must not keep it past the tensor's life.
   * `where` names the caller for the ERR_DISPOSED message.
   */
  buffer(where = 'Tensor'): Float32Array {
    if (this.#data === null) throw new LoraError('ERR_DISPOSED', `${where}: expected a live tensor but received a disposed one (shape ${shapeString(this.shape)})`);
    return this.#data;
  }

  /** The same storage under another shape with the same element count. */
  reshape(shape: readonly number[]): Tensor {
    const n = checkShape('Tensor.reshape', 'shape', shape);
    if (n !== this.size) fail('ERR_SHAPE', 'Tensor.reshape', 'shape', `${this.size} elements`, `${shapeString(shape)} (${n} elements)`);
    return new Tensor(this.buffer('Tensor.reshape'), shape);
  }

  toString(): string {
    return `Tensor(${shapeString(this.shape)}, ${this.dtype}, ${this.device}${this.disposed ? ', disposed' : ''})`;
  }
}

/**
 * Makes a tensor. A Float32Array is taken as the storage without a copy (so later writes to it are
 * seen by the tensor); any other typed array or a plain array of numbers is converted into a new
 * Float32Array.
 */
export function tensor(data: Float32Array | ArrayLike<number>, shape?: readonly number[], options?: TensorOptions): Tensor {
  const where = 'tensor';
  if (options !== undefined && (options === null || typeof options !== 'object' || Array.isArray(options))) fail('ERR_ARGUMENT', where, 'options', 'an options object', options);
  const dtype = options?.dtype ?? 'float32';
  if (dtype !== 'float32') fail('ERR_DTYPE', where, 'options.dtype', "'float32' on the CPU", dtype);
  const device = options?.device ?? 'cpu';
  if (device !== 'cpu' && device !== 'auto') {
    fail('ERR_DEVICE', where, 'options.device', "'cpu' or 'auto' (this build has no CUDA backend)", device);
  }
  let values: Float32Array;
  if (data instanceof Float32Array) values = data;
  else if (ArrayBuffer.isView(data) || Array.isArray(data)) values = Float32Array.from(data as ArrayLike<number>);
  else fail('ERR_ARGUMENT', where, 'data', 'a Float32Array, another typed array or an array of numbers', data);
  const s = shape ?? [values.length];
  const n = checkShape(where, 'shape', s);
  if (n !== values.length) fail('ERR_SHAPE', where, 'data', `${n} elements for shape ${shapeString(s)}`, `${values.length} elements`);
  return new Tensor(values, s);
}

/** A tensor of zeros. */
export function zeros(shape: readonly number[]): Tensor {
  const n = checkShape('zeros', 'shape', shape);
  return new Tensor(new Float32Array(n), shape);
}
