// A LinearLoRA on the CUDA device: what the layer keeps there (W_ext, the workspaces, what forward
// saves for backward) and its forward, backward and merge. LinearLoRA (lib/linear-lora.ts) calls it
// when its base Linear lives on the device; the queueing, disposal and the training flag stay there.
//
// Fused (DESIGN.md section 2): W_ext ((O + r_pad), (I + r_pad)) in the compute dtype holds W, scaling·Bᵀ
// and Aᵀ; x is copied into x_ext's first I columns and the forward is the shrink plus one GEMM, the
// backward the dy-pass, dA, and one GEMM for dx. W_ext is derived from base.weight and the fp32 masters
// A and B: it is refreshed before a forward or backward whenever one of them was written since (their
// storage versions, bumped by every optimizer step) or scaling changed, so after each optimizer step
// the next call sees the new A and B — the O·r + r·I refresh is negligible next to the step.
// Unfused (fused: false): PEFT's order over separate operands; forward keeps x itself for backward.
import { native } from '../cpu/binding';
import { cudaBinding, DeviceBuffer } from './binding';
import { LoraError } from '../../errors';
import type { Linear } from '../../linear';
import type { LoRA } from '../../lora';
import { Tensor } from '../../tensor';
import { checkBoolean, checkFinite, shapeString } from '../../validate';
import { deviceLinearForward, deviceLinearOf } from './linear';
import { DeviceOperand, deviceExact, deviceOutput, deviceRows } from './inputs';
import { DeviceStorage } from './storage';
import { DeviceWorkspace } from './workspace';

interface Saved {
  M: number;
  /** x's shape; dx gets it. */
  shape: readonly number[];
  /** Unfused only: x itself (one reference held until the next forward), as the CPU path keeps it. */
  x: DeviceStorage | null;
}

/** What W_ext was last built from: the storages and their versions, and scaling. */
interface WExtKey {
  W: DeviceStorage | null; wVersion: number;
  A: DeviceStorage | null; aVersion: number;
  B: DeviceStorage | null; bVersion: number;
  scaling: number;
}

export interface DeviceForwardState {
  merged: boolean;
  /** The dropout probability in effect (0 outside training). */
  dropout: number;
}

export class DeviceLoraLayer {
  readonly #base: Linear;
  readonly #lora: LoRA;
  readonly #fused: boolean;
  readonly #checkFinite: boolean;
  readonly #ws: DeviceWorkspace;
  #wExt: DeviceStorage | null = null;
  readonly #key: WExtKey = { W: null, wVersion: -1, A: null, aVersion: -1, B: null, bVersion: -1, scaling: NaN };
  #saved: Saved | null = null;

  constructor(base: Linear, lora: LoRA, fused: boolean, checkFinite: boolean) {
    this.#base = base;
    this.#lora = lora;
    this.#fused = fused;
    this.#checkFinite = checkFinite;
    const r = lora.rank;
    this.#ws = new DeviceWorkspace(base.dtype, base.inFeatures, base.outFeatures, r, cudaBinding().rankPad({ r }));
  }

  get hasSaved(): boolean {
    return this.#saved !== null;
  }

  /** Device buffers held by the layer beyond its parameters: W_ext and the workspaces. */
  get workspaceBuffers(): number {
    return this.#ws.count + (this.#wExt ? 1 : 0);
  }

  /** `out` is the call's options.out (LinearLoRA has checked the options' keys). */
  forward(where: string, x: unknown, out: unknown, state: DeviceForwardState): Tensor {
    if (state.merged) {  // the adapter lives in W now: the base GEMM is the whole layer
      const y = deviceLinearForward(where, deviceLinearOf(this.#base, 'base.'), x, out);
      this.#forget();
      return y;
    }
    const { dtype, math, inFeatures: I, outFeatures: O } = this.#base;
    const r = this.#lora.rank, scaling = this.#lora.scaling;
    const xin = deviceRows(where, 'x', x, I, dtype);
    if (state.dropout > 0) {
      throw new LoraError('ERR_DEVICE', `${where}: expected dropout 0 on the CUDA device (the LoRA path's dropout runs on the CPU only for now) but received dropout ${state.dropout} in training mode; use eval(), dropout: 0, or a layer on the CPU`);
    }
    if (this.#checkFinite) checkFinite(where, 'x', xin.storage.download(where));
    const p = this.#params(where);
    const y = deviceOutput(where, out, [...xin.shape.slice(0, -1), O], dtype, [
      ['x', xin.storage], ['base.weight', p.W.storage], ['base.bias', p.bias?.storage], ['lora.A', p.A.storage], ['lora.B', p.B.storage],
    ]);
    const M = xin.M;
    const layer = { dtype, math, M, I, O, r, scaling };
    const cu = cudaBinding();
    if (M > 0 && this.#fused) {
      const xExt = this.#ws.get('xExt', M).buffer(where);
      const wExt = this.#refreshWExt(where, p);
      cu.cast({ dst: xExt, dstDtype: dtype, ldDst: this.#ws.ldx, src: xin.buf, srcDtype: dtype, ldSrc: I, rows: M, cols: I });
      cu.loraForwardFused({ ...layer, xExt, wExt, bias: p.bias?.buf ?? null, A: p.A.buf, y: y.buf });
    } else if (M > 0) {
      const { At, Bt } = this.#computeMasters(where, p);
      cu.loraForwardUnfused({
        ...layer, x: xin.buf, W: p.W.buf, bias: p.bias?.buf ?? null, A: At, B: Bt,
        s: this.#ws.get('s', M).buffer(where), u: this.#ws.get('u', M).buffer(where), y: y.buf,
      });
    }
    const saved = { M, shape: xin.shape, x: this.#fused || M === 0 ? null : xin.storage.retain() };
    this.#forget();
    this.#saved = saved;
    return y.tensor;
  }

  /** `opts` are the call's options, their keys checked by LinearLoRA. */
  backward(where: string, dy: unknown, opts: { out?: unknown; inputGrad?: unknown }, merged: boolean): Tensor | null {
    const saved = this.#saved;
    if (saved === null) {
      throw new LoraError('ERR_ARGUMENT', `${where}: expected a forward() before backward() but received none${merged ? ' (the layer is merged: unmerge() to train)' : ''}`);
    }
    const { dtype, math, inFeatures: I, outFeatures: O } = this.#base;
    const r = this.#lora.rank, scaling = this.#lora.scaling;
    const d = deviceRows(where, 'dy', dy, O, dtype);
    if (d.M !== saved.M) {
      throw new LoraError('ERR_SHAPE', `${where}: expected ${saved.M} rows of ${O} (shape ${shapeString([...saved.shape.slice(0, -1), O])}, from the last forward) for dy but received shape ${shapeString(d.shape)}`);
    }
    if (this.#checkFinite) checkFinite(where, 'dy', d.storage.download(where));
    const inputGrad = opts.inputGrad === undefined ? true : checkBoolean(where, 'options.inputGrad', opts.inputGrad);
    const p = this.#params(where);
    const dA = deviceExact(where, 'lora.A.grad', this.#lora.A.grad, [I, r], 'float32');
    const dB = deviceExact(where, 'lora.B.grad', this.#lora.B.grad, [r, O], 'float32');
    const reads = [['dy', d.storage], ['x (saved by forward)', saved.x], ['base.weight', p.W.storage], ['lora.A', p.A.storage], ['lora.B', p.B.storage]] as const;
    for (const [name, g] of [['lora.A.grad', dA], ['lora.B.grad', dB]] as const) {
      for (const [rn, s] of reads) {
        if (s === g.storage) throw new LoraError('ERR_ARGUMENT', `${where}: expected a gradient that does not share memory with ${rn} for ${name} but received one that overlaps ${rn}`);
      }
    }
    const dx = inputGrad ? deviceOutput(where, opts.out, saved.shape, dtype, [...reads, ['lora.A.grad', dA.storage], ['lora.B.grad', dB.storage]]) : null;
    const M = saved.M;
    if (M === 0) return dx?.tensor ?? null;
    const layer = { dtype, math, M, I, O, r, scaling, dA: dA.buf, dB: dB.buf, dx: dx?.buf ?? null, accumulate: true };
    const cu = cudaBinding();
    if (this.#fused) {
      const xExt = this.#ws.get('xExt', M).buffer(where), dyExt = this.#ws.get('dyExt', M).buffer(where);
      const wExt = this.#refreshWExt(where, p);
      cu.cast({ dst: dyExt, dstDtype: dtype, ldDst: this.#ws.ldy, src: d.buf, srcDtype: dtype, ldSrc: O, rows: M, cols: O });
      cu.loraBackwardFused({ ...layer, xExt, dyExt, wExt, B: p.B.buf, dsWork: this.#ws.get('dsWork', M).buffer(where), lddx: I });
    } else {
      const { At, Bt } = this.#computeMasters(where, p);
      cu.loraBackwardUnfused({
        ...layer, x: saved.x!.buffer(`${where}: x (saved by forward)`), s: this.#ws.get('s', M).buffer(where), dy: d.buf, W: p.W.buf, A: At, B: Bt,
        du: this.#ws.get('du', M).buffer(where), ds: this.#ws.get('ds', M).buffer(where),
      });
    }
    return dx?.tensor ?? null;
  }

  /**
   * W ± scaling·(A·B)ᵀ, computed on the host in float32 by the CPU kernel (a copy of W, A and B down
   * and W back up: merge is rare, and this keeps one implementation of its order and its finiteness
   * check). The new W is rounded to the compute dtype on the way up, so in bfloat16 or float16 an
   * unmerge gives W back only to that rounding.
   */
  merge(where: string, sign: 1 | -1): void {
    const p = this.#params(where);
    const { inFeatures: I, outFeatures: O } = this.#base;
    const W = p.W.storage.download(where);
    const ok = native.merge({ W, A: p.A.storage.download(where), B: p.B.storage.download(where), I, O, r: this.#lora.rank, scaling: this.#lora.scaling, sign });
    if (!ok) throw new LoraError('ERR_NOT_FINITE', `${where}: expected a finite merged weight but received a non-finite result; the weight is unchanged`);
    p.W.storage.write(W, where);
    this.#forget();
  }

  /** Drops what forward saved (merge, dispose). */
  forget(): void {
    this.#forget();
  }

  dispose(): void {
    this.#forget();
    this.#ws.dispose();
    this.#wExt?.release();
    this.#wExt = null;
  }

  #forget(): void {
    this.#saved?.x?.release();
    this.#saved = null;
  }

  #params(where: string): { W: DeviceOperand; bias: DeviceOperand | null; A: DeviceOperand; B: DeviceOperand } {
    const { dtype, inFeatures: I, outFeatures: O } = this.#base;
    const r = this.#lora.rank;
    return {
      W: deviceExact(where, 'base.weight', this.#base.weight, [O, I], dtype),
      bias: this.#base.bias ? deviceExact(where, 'base.bias', this.#base.bias, [O], dtype) : null,
      A: deviceExact(where, 'lora.A', this.#lora.A, [I, r], 'float32'),
      B: deviceExact(where, 'lora.B', this.#lora.B, [r, O], 'float32'),
    };
  }

  /** W_ext, rebuilt where its sources moved since the last call: W's block, then scaling·Bᵀ and Aᵀ. */
  #refreshWExt(where: string, p: { W: DeviceOperand; A: DeviceOperand; B: DeviceOperand }): DeviceBuffer {
    const { dtype, inFeatures: I, outFeatures: O } = this.#base;
    const r = this.#lora.rank, scaling = this.#lora.scaling, ld = this.#ws.ldx;
    const k = this.#key, cu = cudaBinding();
    this.#wExt ??= DeviceStorage.alloc(dtype, (O + (ld - I)) * ld);
    const wExt = this.#wExt.buffer(where);
    if (k.W !== p.W.storage || k.wVersion !== p.W.storage.version) {
      cu.cast({ dst: wExt, dstDtype: dtype, ldDst: ld, src: p.W.buf, srcDtype: dtype, ldSrc: I, rows: O, cols: I });
      k.W = p.W.storage;
      k.wVersion = p.W.storage.version;
    }
    if (k.A !== p.A.storage || k.aVersion !== p.A.storage.version || k.B !== p.B.storage || k.bVersion !== p.B.storage.version || k.scaling !== scaling) {
      cu.refreshWExt({ dtype, I, O, r, scaling, wExt, A: p.A.buf, B: p.B.buf });
      Object.assign(k, { A: p.A.storage, aVersion: p.A.storage.version, B: p.B.storage, bVersion: p.B.storage.version, scaling });
    }
    return wExt;
  }

  /** A and B as the unfused kernels read them: the fp32 masters in float32, else casts of them. */
  #computeMasters(where: string, p: { A: DeviceOperand; B: DeviceOperand }): { At: DeviceBuffer; Bt: DeviceBuffer } {
    const { dtype, inFeatures: I, outFeatures: O } = this.#base;
    if (dtype === 'float32') return { At: p.A.buf, Bt: p.B.buf };
    const r = this.#lora.rank, cu = cudaBinding();
    const { At, Bt } = this.#ws.castMasters();
    const at = At.buffer(where), bt = Bt.buffer(where);
    cu.cast({ dst: at, dstDtype: dtype, src: p.A.buf, srcDtype: 'float32', rows: I, cols: r });
    cu.cast({ dst: bt, dstDtype: dtype, src: p.B.buf, srcDtype: 'float32', rows: r, cols: O });
    return { At: at, Bt: bt };
  }
}
