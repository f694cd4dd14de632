// The storage of a CPU tensor: a Float32Array in row-major order, which the kernels read and write in
// place, so a training step copies nothing. tensor() takes a caller's Float32Array as it is; tensors
// that share one (reshape) share this object. Nothing is freed here: when the last tensor lets go of
// the array, the GC takes it, so a dispose() only ends the tensor's own use.
import type { TensorStorage } from '../backend';
import { fail, said } from '../../errors';

export class CpuStorage implements TensorStorage {
  readonly device = 'cpu' as const;
  readonly dtype = 'float32' as const;
  readonly data: Float32Array;
  version = 0;

  constructor(data: Float32Array) {
    this.data = data;
  }

  get length(): number {
    return this.data.length;
  }

  get released(): boolean {
    return false;
  }

  get hostArray(): Float32Array {
    return this.data;
  }

  hostView(): Float32Array {
    return this.data;
  }

  hostCopy(): Float32Array {
    return this.data.slice();
  }

  async hostCopyAsync(): Promise<Float32Array> {
    return this.data.slice();
  }

  write(values: Float32Array, where: string): void {
    if (values.length !== this.data.length) fail('ERR_SHAPE', where, 'the values', `${this.data.length} elements`, said(`${values.length}`));
    if (values !== this.data) this.data.set(values);
    this.version++;
  }

  fill(value: number): void {
    this.data.fill(value);
    this.version++;
  }

  copyFrom(src: TensorStorage, where: string): void {
    this.write(src.hostView(where), where);
  }

  overlaps(other: TensorStorage): boolean {
    return other.hostArray !== null && overlaps(this.data, other.hostArray);
  }

  markWritten(): void {
    this.version++;
  }

  retain(): this {
    return this;
  }

  release(): void {}
}

/** Whether two typed arrays share at least one byte. */
function overlaps(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return a.buffer === b.buffer && a.byteLength > 0 && b.byteLength > 0 &&
    a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}

/** An operand's Float32Array: every storage of this backend is a CpuStorage (registry.ts). */
export function data(o: { readonly storage: TensorStorage }): Float32Array {
  return (o.storage as CpuStorage).data;
}
