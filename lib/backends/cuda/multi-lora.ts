// A MultiLoRALinear on the CUDA device (native/cuda/multi_lora.cu): the adapters' ranks concatenated
// into one rank R = Σ rank_pad(r_i), so the layer is the fused single-adapter one over W_ext
// ((O + R), (I + R)) built from A_cat (I, R) and B_cat (R, O, each block scaling_i·B_i), one GEMM per
// direction for every row and adapter; each row keeps only its own adapter's block of s and ds (an
// int32 index of row and column adapters, uploaded per call). W_ext's W block is refreshed when the
// base weight changes, its A and B blocks (through A_cat and B_cat) when any adapter's A, B or
// scaling changes or the set of adapters does; the backward adds block i of dA_cat and dB_cat into
// adapter i's gradients. No dropout here (the backend says loraDropout: false).
import type { MultiLoRAAdapter, MultiLoRABackward, MultiLoRAForward, MultiLoRAKernels, MultiLoRASpec, TensorStorage } from '../backend';
import { cudaBinding, DeviceBuffer } from './binding';
import { buf, DeviceStorage } from './storage';
import { whenDeviceDone } from './sync';
import { DeviceWorkspace } from './workspace';

/** What the concatenated masters were last built from: each adapter's storages, versions and scaling. */
type Key = Array<{ A: TensorStorage; aVersion: number; B: TensorStorage; bVersion: number; scaling: number; r: number }>;

export class CudaMultiLoRA implements MultiLoRAKernels {
  readonly #spec: MultiLoRASpec;
  #R = 0;
  #ws: DeviceWorkspace | null = null;
  #wExt: DeviceStorage | null = null;
  #aCat: DeviceStorage | null = null;
  #bCat: DeviceStorage | null = null;
  #dACat: DeviceStorage | null = null;
  #dBCat: DeviceStorage | null = null;
  #index: { rows: number; buffer: DeviceBuffer } | null = null;
  #key: Key = [];
  #w: { W: TensorStorage | null; version: number } = { W: null, version: -1 };

  constructor(spec: MultiLoRASpec) {
    this.#spec = spec;
  }

  forward(c: MultiLoRAForward): void {
    const { dtype, math, I, O } = this.#spec;
    const { where } = c, M = c.x.M;
    if (M === 0) return;
    const cu = cudaBinding();
    const R = this.#layout(c.adapters);
    const ws = this.#ws!;
    const wExt = this.#refresh(where, c.W.storage, buf(where, c.W), c.adapters);
    const index = this.#uploadIndex(M, c.index, c.adapters);
    const xExt = ws.get('xExt', M).buffer(where);
    cu.cast({ dst: xExt, dstDtype: dtype, ldDst: ws.ldx, src: buf(where, c.x), srcDtype: dtype, ldSrc: I, rows: M, cols: I });
    cu.multiLoraForwardFused({
      dtype, math, M, I, O, R, xExt, wExt, bias: c.bias ? buf(where, c.bias) : null, aCat: this.#aCat!.buffer(where), index, y: buf(where, c.y),
    });
  }

  forwardAsync(c: MultiLoRAForward): Promise<void> {
    return whenDeviceDone(this.forward(c));
  }

  backward(c: MultiLoRABackward): void {
    const { dtype, math, I, O } = this.#spec;
    const { where } = c, M = c.x.M;
    if (M === 0) return;
    const cu = cudaBinding();
    const R = this.#R, ws = this.#ws!;
    const wExt = this.#refresh(where, c.W.storage, buf(where, c.W), c.adapters);  // as the forward left it, unless a weight changed since
    const xExt = ws.get('xExt', M).buffer(where), dyExt = ws.get('dyExt', M).buffer(where);
    cu.cast({ dst: dyExt, dstDtype: dtype, ldDst: ws.ldy, src: buf(where, c.dy), srcDtype: dtype, ldSrc: O, rows: M, cols: O });
    this.#dACat ??= DeviceStorage.alloc('float32', I * R);
    this.#dBCat ??= DeviceStorage.alloc('float32', R * O);
    cu.multiLoraBackwardFused({
      dtype, math, M, I, O, R, xExt, dyExt, wExt, bCat: this.#bCat!.buffer(where), index: this.#index!.buffer,
      dsWork: ws.get('dsWork', M).buffer(where), dACat: this.#dACat.buffer(where), dBCat: this.#dBCat.buffer(where),
      adapters: c.adapters.map((a) => ({ r: a.r, scaling: a.scaling, dA: buf(where, a.dA), dB: buf(where, a.dB) })),
      dx: c.dx ? buf(where, c.dx) : null,
    });
  }

  backwardAsync(c: MultiLoRABackward): Promise<void> {
    return whenDeviceDone(this.backward(c));
  }

  forget(): void {}

  dispose(): void {
    this.#release();
    this.#index?.buffer.dispose();
    this.#index = null;
  }

  /** R for these adapters; a new R (adapters added or removed) drops the buffers sized by the old one. */
  #layout(adapters: readonly MultiLoRAAdapter[]): number {
    const cu = cudaBinding();
    let R = 0;
    for (const a of adapters) R += cu.rankPad({ r: a.r });
    if (R !== this.#R) {
      this.#release();
      const { dtype, I, O } = this.#spec;
      this.#R = R;
      this.#ws = new DeviceWorkspace(dtype, I, O, R);
      this.#wExt = DeviceStorage.alloc(dtype, this.#ws.layout.elements);
      this.#aCat = DeviceStorage.alloc('float32', I * R);
      this.#bCat = DeviceStorage.alloc('float32', R * O);
    }
    return R;
  }

  /** W_ext, with the blocks whose sources moved since the last call rebuilt. */
  #refresh(where: string, W: TensorStorage, wBuf: DeviceBuffer, adapters: readonly MultiLoRAAdapter[]): DeviceBuffer {
    const { dtype, I, O } = this.#spec;
    const cu = cudaBinding();
    const wExt = this.#wExt!.buffer(where);
    if (this.#w.W !== W || this.#w.version !== W.version) {
      cu.cast({ dst: wExt, dstDtype: dtype, ldDst: this.#ws!.ldx, src: wBuf, srcDtype: dtype, ldSrc: I, rows: O, cols: I });
      this.#w = { W, version: W.version };
    }
    const k = this.#key;
    const same = k.length === adapters.length && adapters.every((a, i) => k[i].A === a.A.storage && k[i].aVersion === a.A.storage.version &&
      k[i].B === a.B.storage && k[i].bVersion === a.B.storage.version && k[i].scaling === a.scaling && k[i].r === a.r);
    if (!same) {
      cu.multiLoraRefresh({
        dtype, I, O, R: this.#R, adapters: adapters.map((a) => ({ r: a.r, scaling: a.scaling, A: buf(where, a.A), B: buf(where, a.B) })),
        aCat: this.#aCat!.buffer(where), bCat: this.#bCat!.buffer(where), wExt,
      });
      this.#key = adapters.map((a) => ({ A: a.A.storage, aVersion: a.A.storage.version, B: a.B.storage, bVersion: a.B.storage.version, scaling: a.scaling, r: a.r }));
    }
    return wExt;
  }

  /** Row adapters (M), then each column's adapter (R), on the device. */
  #uploadIndex(M: number, rows: Int32Array, adapters: readonly MultiLoRAAdapter[]): DeviceBuffer {
    const cu = cudaBinding();
    const R = this.#R;
    const index = new Int32Array(M + R);
    index.set(rows.subarray(0, M));
    let c = M;
    adapters.forEach((a, i) => {
      const width = cu.rankPad({ r: a.r });
      index.fill(i, c, c + width);
      c += width;
    });
    if (!this.#index || this.#index.rows < M + R) {
      this.#index?.buffer.dispose();
      this.#index = { rows: M + R, buffer: cu.alloc(4 * (M + R)) };
    }
    cu.upload({ buffer: this.#index.buffer, dtype: 'int32', data: index });
    return this.#index.buffer;
  }

  #release(): void {
    this.#ws?.dispose();
    for (const s of [this.#wExt, this.#aCat, this.#bCat, this.#dACat, this.#dBCat]) s?.release();
    this.#ws = null;
    this.#wExt = this.#aCat = this.#bCat = this.#dACat = this.#dBCat = null;
    this.#key = [];
    this.#w = { W: null, version: -1 };
    this.#R = 0;
  }
}
