// The device buffers a LinearLoRA on the CUDA device reuses from step to step, so a steady training
// loop allocates nothing: they grow (never shrink) when M grows, and the old ones go back to the
// caching allocator at once. Their widths come from the W_ext layout (r_pad, leading dimensions).
//   fused:   x_ext (M, I + r_pad) and dy_ext (M, O + r_pad) in the compute dtype, whose padding
//            columns receive s and ds from the shrink and the dy-pass; ds_work (M, r) fp32.
//   unfused: s (M, r), u (M, O), du (M, O), ds (M, r) in the compute dtype (PEFT's temporaries), and
//            A, B cast to the compute dtype (16-bit only; in float32 the masters are used as they are).
import type { DType } from '../../dtype';
import { cudaBinding, WExtLayout } from './binding';
import { DeviceStorage } from './storage';

type Name = 'xExt' | 'dyExt' | 'dsWork' | 's' | 'u' | 'du' | 'ds';

export class DeviceWorkspace {
  readonly dtype: DType;
  readonly #I: number;
  readonly #O: number;
  readonly #r: number;
  /** W_ext's rows and leading dimension, and x_ext's and dy_ext's leading dimensions. */
  readonly layout: WExtLayout;
  readonly #bufs = new Map<Name, { rows: number; storage: DeviceStorage }>();
  #At: DeviceStorage | null = null;
  #Bt: DeviceStorage | null = null;

  constructor(dtype: DType, I: number, O: number, r: number) {
    this.dtype = dtype;
    this.#I = I;
    this.#O = O;
    this.#r = r;
    this.layout = cudaBinding().wExtLayout({ I, O, r });
  }

  /** Leading dimensions of x_ext and dy_ext. */
  get ldx(): number {
    return this.layout.ldx;
  }

  get ldy(): number {
    return this.layout.ldy;
  }

  /** The buffer `name` with room for at least M rows. */
  get(name: Name, M: number): DeviceStorage {
    const have = this.#bufs.get(name);
    if (have && have.rows >= M) return have.storage;
    have?.storage.release();
    const [width, dtype] = this.#layout(name);
    const storage = DeviceStorage.alloc(dtype, M * width);
    this.#bufs.set(name, { rows: M, storage });
    return storage;
  }

  /** A (I, r) and B (r, O) in the compute dtype, for the unfused path. */
  castMasters(): { At: DeviceStorage; Bt: DeviceStorage } {
    this.#At ??= DeviceStorage.alloc(this.dtype, this.#I * this.#r);
    this.#Bt ??= DeviceStorage.alloc(this.dtype, this.#r * this.#O);
    return { At: this.#At, Bt: this.#Bt };
  }

  /** Live device buffers held (for tests and accounting). */
  get count(): number {
    return this.#bufs.size + (this.#At ? 1 : 0) + (this.#Bt ? 1 : 0);
  }

  dispose(): void {
    for (const { storage } of this.#bufs.values()) storage.release();
    this.#bufs.clear();
    this.#At?.release();
    this.#Bt?.release();
    this.#At = this.#Bt = null;
  }

  #layout(name: Name): [number, DType] {
    switch (name) {
      case 'xExt': return [this.ldx, this.dtype];
      case 'dyExt': return [this.ldy, this.dtype];
      case 'dsWork': return [this.#r, 'float32'];
      case 's': case 'ds': return [this.#r, this.dtype];
      case 'u': case 'du': return [this.#O, this.dtype];
    }
  }
}
