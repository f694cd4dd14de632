// A LinearLoRA on the CUDA device: what the layer keeps there (W_ext, the workspaces, x for the
// unfused backward) and its forward and backward.
//
// Fused (docs/ARCHITECTURE.md, "Layouts and the math"): W_ext ((O + r_pad), (I + r_pad)) in the
// compute dtype holds W, scaling·Bᵀ and Aᵀ; x is copied into x_ext's first I columns and the forward
// is the shrink plus one GEMM, the backward the dy-pass, dA, and one GEMM for dx. W_ext is derived from the base weight and
// the fp32 masters A and B: it is refreshed before a forward or backward whenever one of them was
// written since (their storage versions, bumped by every optimizer step and load) or scaling changed,
// so after each optimizer step the next call sees the new A and B; the O·r + r·I refresh is negligible
// next to the step.
// Unfused (fused: false): PEFT's order over separate operands; forward keeps x itself for backward.
import type { LinearLoRAKernels, LinearLoRASpec, LoRABackward, LoRAForward, LoRAParams, TensorStorage } from '../backend';
import { cudaBinding, DeviceBuffer } from './binding';
import { buf, DeviceStorage } from './storage';
import { whenDeviceDone } from './sync';
import { DeviceWorkspace } from './workspace';

/** What W_ext was last built from: the storages and their versions, and scaling. */
interface WExtKey {
  W: TensorStorage | null; wVersion: number;
  A: TensorStorage | null; aVersion: number;
  B: TensorStorage | null; bVersion: number;
  scaling: number;
}

export class CudaLinearLoRA implements LinearLoRAKernels {
  readonly #spec: LinearLoRASpec;
  readonly #ws: DeviceWorkspace;
  #wExt: DeviceStorage | null = null;
  readonly #key: WExtKey = { W: null, wVersion: -1, A: null, aVersion: -1, B: null, bVersion: -1, scaling: NaN };
  /** Unfused only: x of the last forward (one reference, held until the next forward), as the CPU path keeps it. */
  #x: TensorStorage | null = null;

  constructor(spec: LinearLoRASpec) {
    this.#spec = spec;
    this.#ws = new DeviceWorkspace(spec.dtype, spec.I, spec.O, spec.r);
  }

  forward(c: LoRAForward): void {
    const { dtype, math, I, O, r, fused } = this.#spec;
    const { where, p } = c, M = c.x.M;
    const layer = { dtype, math, M, I, O, r, scaling: p.scaling };
    const cu = cudaBinding();
    if (M > 0 && fused) {
      const xExt = this.#ws.get('xExt', M).buffer(where);
      const wExt = this.#refreshWExt(where, p);
      cu.cast({ dst: xExt, dstDtype: dtype, ldDst: this.#ws.ldx, src: buf(where, c.x), srcDtype: dtype, ldSrc: I, rows: M, cols: I });
      cu.loraForwardFused({ ...layer, xExt, wExt, bias: p.bias ? buf(where, p.bias) : null, A: buf(where, p.A), y: buf(where, c.y) });
    } else if (M > 0) {
      const { At, Bt } = this.#computeMasters(where, p);
      cu.loraForwardUnfused({
        ...layer, x: buf(where, c.x), W: buf(where, p.W), bias: p.bias ? buf(where, p.bias) : null, A: At, B: Bt,
        s: this.#ws.get('s', M).buffer(where), u: this.#ws.get('u', M).buffer(where), y: buf(where, c.y),
      });
    }
    const x = fused || M === 0 ? null : c.x.storage.retain();
    this.forget();
    this.#x = x;
  }

  forwardAsync(c: LoRAForward): Promise<void> {
    return whenDeviceDone(this.forward(c));
  }

  backward(c: LoRABackward): void {
    const { dtype, math, I, O, r, fused } = this.#spec;
    const { where, p } = c, M = c.x.M;
    if (M === 0) return;
    const layer = { dtype, math, M, I, O, r, scaling: p.scaling, dA: buf(where, c.dA), dB: buf(where, c.dB), dx: c.dx ? buf(where, c.dx) : null, accumulate: true };
    const cu = cudaBinding();
    if (fused) {
      const xExt = this.#ws.get('xExt', M).buffer(where), dyExt = this.#ws.get('dyExt', M).buffer(where);
      const wExt = this.#refreshWExt(where, p);
      cu.cast({ dst: dyExt, dstDtype: dtype, ldDst: this.#ws.ldy, src: buf(where, c.dy), srcDtype: dtype, ldSrc: O, rows: M, cols: O });
      cu.loraBackwardFused({ ...layer, xExt, dyExt, wExt, B: buf(where, p.B), dsWork: this.#ws.get('dsWork', M).buffer(where), lddx: I });
    } else {
      const { At, Bt } = this.#computeMasters(where, p);
      cu.loraBackwardUnfused({
        ...layer, x: (this.#x as DeviceStorage).buffer(`${where}: x (saved by forward)`), s: this.#ws.get('s', M).buffer(where), dy: buf(where, c.dy),
        W: buf(where, p.W), A: At, B: Bt, du: this.#ws.get('du', M).buffer(where), ds: this.#ws.get('ds', M).buffer(where),
      });
    }
  }

  backwardAsync(c: LoRABackward): Promise<void> {
    return whenDeviceDone(this.backward(c));
  }

  /** No dropout here (the backend says loraDropout: false): never a mask. */
  dropoutMask(): null {
    return null;
  }

  forget(): void {
    this.#x?.release();
    this.#x = null;
  }

  dispose(): void {
    this.forget();
    this.#ws.dispose();
    this.#wExt?.release();
    this.#wExt = null;
  }

  /** W_ext, rebuilt where its sources moved since the last call: W's block, then scaling·Bᵀ and Aᵀ. */
  #refreshWExt(where: string, p: LoRAParams): DeviceBuffer {
    const { dtype, I, O, r } = this.#spec;
    const { ldx, elements } = this.#ws.layout;
    const k = this.#key, cu = cudaBinding();
    this.#wExt ??= DeviceStorage.alloc(dtype, elements);
    const wExt = this.#wExt.buffer(where);
    const W = p.W.storage, A = p.A.storage, B = p.B.storage;
    if (k.W !== W || k.wVersion !== W.version) {
      cu.cast({ dst: wExt, dstDtype: dtype, ldDst: ldx, src: buf(where, p.W), srcDtype: dtype, ldSrc: I, rows: O, cols: I });
      k.W = W;
      k.wVersion = W.version;
    }
    if (k.A !== A || k.aVersion !== A.version || k.B !== B || k.bVersion !== B.version || k.scaling !== p.scaling) {
      cu.refreshWExt({ dtype, I, O, r, scaling: p.scaling, wExt, A: buf(where, p.A), B: buf(where, p.B) });
      Object.assign(k, { A, aVersion: A.version, B, bVersion: B.version, scaling: p.scaling });
    }
    return wExt;
  }

  /** A and B as the unfused kernels read them: the fp32 masters in float32, else casts of them. */
  #computeMasters(where: string, p: LoRAParams): { At: DeviceBuffer; Bt: DeviceBuffer } {
    const { dtype, I, O, r } = this.#spec;
    if (dtype === 'float32') return { At: buf(where, p.A), Bt: buf(where, p.B) };
    const cu = cudaBinding();
    const { At, Bt } = this.#ws.castMasters();
    const at = At.buffer(where), bt = Bt.buffer(where);
    cu.cast({ dst: at, dstDtype: dtype, src: buf(where, p.A), srcDtype: 'float32', rows: I, cols: r });
    cu.cast({ dst: bt, dstDtype: dtype, src: buf(where, p.B), srcDtype: 'float32', rows: r, cols: O });
    return { At: at, Bt: bt };
  }
}
