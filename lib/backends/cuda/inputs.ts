// The device twin of lib/inputs.ts: what a device op accepts for an operand, with the checks and the
// mixed-device rule in one place. A layer or loss on the CUDA device takes cuda Tensors of its compute
// dtype; a cpu Tensor or a typed array there is ERR_DEVICE naming the argument (nothing moves between
// host and device behind the caller's back: .to('cuda') says where the copy happens).
import { DeviceBuffer } from './binding';
import { describe, LoraError } from '../../errors';
import { Tensor } from '../../tensor';
import { checkShape, shapeString } from '../../validate';
import { DType } from '../../dtype';
import { DeviceStorage } from './storage';

export interface DeviceOperand {
  storage: DeviceStorage;
  buf: DeviceBuffer;
  shape: readonly number[];
  /** Element count. */
  n: number;
}

/** A live cuda Tensor of `dtype` (any shape). */
export function deviceTensor(where: string, arg: string, value: unknown, dtype: DType): DeviceOperand {
  if (!(value instanceof Tensor)) {
    if (ArrayBuffer.isView(value)) {
      throw new LoraError('ERR_DEVICE', `${where}: expected a cuda Tensor for ${arg} (this runs on the CUDA device) but received ${describe(value)}, which is host memory; make a device tensor with tensor(data, shape, { device: 'cuda', dtype: '${dtype}' })`);
    }
    throw new LoraError('ERR_ARGUMENT', `${where}: expected a cuda Tensor for ${arg} but received ${describe(value)}`);
  }
  if (value.device !== 'cuda') {
    throw new LoraError('ERR_DEVICE', `${where}: expected a cuda tensor for ${arg} (this runs on the CUDA device) but received a ${value.device} tensor of shape ${shapeString(value.shape)}; copy it with .to('cuda', { dtype: '${dtype}' })`);
  }
  const storage = value.deviceStorage(`${where}: ${arg}`);
  if (value.dtype !== dtype) {
    throw new LoraError('ERR_DTYPE', `${where}: expected a ${dtype} tensor for ${arg} (the compute dtype here) but received a ${value.dtype} one; convert it with .to('cuda', { dtype: '${dtype}' })`);
  }
  const n = checkShape(where, `${arg}.shape`, value.shape);
  if (n !== storage.length) throw new LoraError('ERR_SHAPE', `${where}: expected storage of ${n} elements for ${arg} (shape ${shapeString(value.shape)}) but received ${storage.length} elements`);
  return { storage, buf: storage.buffer(`${where}: ${arg}`), shape: value.shape, n };
}

/** An input of shape (..., features), its leading dimensions flattened to M rows. */
export function deviceRows(where: string, arg: string, value: unknown, features: number, dtype: DType): DeviceOperand & { M: number } {
  const t = deviceTensor(where, arg, value, dtype);
  if (t.shape.length === 0 || t.shape[t.shape.length - 1] !== features) {
    throw new LoraError('ERR_SHAPE', `${where}: expected a shape (..., ${features}) for ${arg} but received shape ${shapeString(t.shape)}`);
  }
  return { ...t, M: t.n / features };
}

/** A tensor of exactly `shape`. */
export function deviceExact(where: string, arg: string, value: unknown, shape: readonly number[], dtype: DType): DeviceOperand {
  const t = deviceTensor(where, arg, value, dtype);
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new LoraError('ERR_SHAPE', `${where}: expected shape ${shapeString(shape)} for ${arg} but received shape ${shapeString(t.shape)}`);
  }
  return t;
}

/**
 * The output of a device op: `out` when given (a cuda tensor of `shape` and `dtype` that shares no
 * storage with what the op reads), else a new device tensor. Its contents are left to the op.
 */
export function deviceOutput(where: string, out: unknown, shape: readonly number[], dtype: DType,
  reads: ReadonlyArray<readonly [string, DeviceStorage | null | undefined]> = []): { tensor: Tensor; buf: DeviceBuffer } {
  if (out === undefined) {
    const n = checkShape(where, 'shape', shape);
    const storage = DeviceStorage.alloc(dtype, n);
    return { tensor: new Tensor(storage, shape), buf: storage.buffer(where) };
  }
  if (!(out instanceof Tensor)) throw new LoraError('ERR_ARGUMENT', `${where}: expected a Tensor for options.out but received ${describe(out)}`);
  const o = deviceExact(where, 'options.out', out, shape, dtype);
  for (const [name, s] of reads) {
    if (s && s === o.storage) throw new LoraError('ERR_ARGUMENT', `${where}: expected a tensor that does not share memory with ${name} for options.out but received one that overlaps ${name}`);
  }
  return { tensor: out, buf: o.buf };
}
