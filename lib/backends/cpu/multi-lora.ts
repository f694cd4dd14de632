// A MultiLoRALinear on the CPU: each forward groups the rows by adapter (native.multiLoraGroup: the
// permutation and the segments, kept for backward), then one native call runs the frozen GEMM over
// every row and the rank-r products per segment (native/cpu/multi_lora.cpp). The workspaces grow with
// the largest batch seen and are reused from step to step.
import type { MultiLoRAAdapter, MultiLoRABackward, MultiLoRAForward, MultiLoRAKernels, MultiLoRASpec, Operand } from '../backend';
import { MultiLoraAdapterArgs, MultiLoraBackwardArgs, MultiLoraForwardArgs, MultiLoraOperands, native } from './binding';
import { data } from './storage';

/**
 * How a call passes the frozen weight and the activations: float32 arrays here; the reduced-precision
 * backend passes W in its format and bf16 activations (lib/backends/cpu-lowp/multi-lora.ts).
 */
export interface MultiOperandFormat {
  weight(W: Operand): MultiLoraOperands;
  act(o: Operand): Float32Array | Uint16Array;
  bias(o: Operand | null): Float32Array | null;
}

const FLOAT32: MultiOperandFormat = { weight: (W) => ({ W: data(W) }), act: data, bias: (o) => (o ? data(o) : null) };

/** What a forward's grouping decided, for the buffers it and its backward need. */
interface Grouping {
  M: number;
  /** Rows that have an adapter: the first start[K] grouped positions. */
  loraRows: number;
  grouped: boolean;
  /** Σ n_i·r_i: the elements of s and ds. */
  sSize: number;
  needsXt: boolean;
  dropout: boolean;
}

export class CpuMultiLoRA implements MultiLoRAKernels {
  readonly #spec: MultiLoRASpec;
  readonly #format: MultiOperandFormat;
  #grouped = true;  // the last forward's rows
  order = new Int32Array(0);   // (M) grouped position → row
  start = new Int32Array(1);   // (K + 1) segment starts
  s = new Float32Array(0);     // (Σ n_i·r_i) x̃_i·A_i, kept for backward
  ds = new Float32Array(0);    // (Σ n_i·r_i)
  xt = new Float32Array(0);    // (adapter rows, I) x̃ in grouped order, when gathered or dropped out
  mask = new Uint8Array(0);    // (adapter rows, I)
  dyg = new Float32Array(0);   // (adapter rows, O) dy gathered, when the rows are not grouped

  constructor(spec: MultiLoRASpec, format: MultiOperandFormat = FLOAT32) {
    this.#spec = spec;
    this.#format = format;
  }

  forward(c: MultiLoRAForward): void {
    native.multiLoraForward(this.#forwardArgs(c));
  }

  forwardAsync(c: MultiLoRAForward): Promise<void> {
    return native.multiLoraForwardAsync(this.#forwardArgs(c));
  }

  backward(c: MultiLoRABackward): void {
    native.multiLoraBackward(this.#backwardArgs(c));
  }

  backwardAsync(c: MultiLoRABackward): Promise<void> {
    return native.multiLoraBackwardAsync(this.#backwardArgs(c));
  }

  forget(): void {}

  dispose(): void {
    this.order = new Int32Array(0);
    this.s = this.ds = this.xt = this.dyg = new Float32Array(0);
    this.mask = new Uint8Array(0);
  }

  #group(M: number, index: Int32Array, adapters: readonly MultiLoRAAdapter[]): Grouping {
    const K = adapters.length;
    if (this.order.length < M) this.order = new Int32Array(M);
    if (this.start.length < K + 1) this.start = new Int32Array(K + 1);
    const grouped = native.multiLoraGroup({ M, K, index, order: this.order, start: this.start });
    let sSize = 0, needsXt = !grouped, dropout = false;
    for (let i = 0; i < K; i++) {
      const n = this.start[i + 1] - this.start[i];
      sSize += n * adapters[i].r;
      if (n > 0 && adapters[i].dropout > 0) needsXt = dropout = true;
    }
    return { M, loraRows: this.start[K], grouped, sSize, needsXt, dropout };
  }

  #forwardArgs(c: MultiLoRAForward): MultiLoraForwardArgs {
    const { I, O } = this.#spec;
    const M = c.x.M, K = c.adapters.length;
    const g = this.#group(M, c.index, c.adapters);
    this.#grouped = g.grouped;
    if (this.s.length < g.sSize) this.s = new Float32Array(g.sSize);
    if (g.needsXt && this.xt.length < g.loraRows * I) this.xt = new Float32Array(g.loraRows * I);
    if (g.dropout && this.mask.length < g.loraRows * I) this.mask = new Uint8Array(g.loraRows * I);
    const f = this.#format;
    return {
      M, I, O, K, ...f.weight(c.W), x: f.act(c.x), bias: f.bias(c.bias),
      order: this.order, start: this.start, adapters: c.adapters.map(adapterArgs),
      s: this.s, xt: this.xt, mask: this.mask, y: f.act(c.y),
    };
  }

  #backwardArgs(c: MultiLoRABackward): MultiLoraBackwardArgs {
    const { I, O } = this.#spec;
    const M = c.x.M, K = c.adapters.length;
    let sSize = 0;
    for (let i = 0; i < K; i++) sSize += (this.start[i + 1] - this.start[i]) * c.adapters[i].r;
    const loraRows = this.start[K];
    if (this.ds.length < sSize) this.ds = new Float32Array(sSize);
    if (!this.#grouped && this.dyg.length < loraRows * O) this.dyg = new Float32Array(loraRows * O);
    const f = this.#format;
    return {
      M, I, O, K, ...f.weight(c.W), x: f.act(c.x), dy: f.act(c.dy),
      order: this.order, start: this.start,
      adapters: c.adapters.map((a) => ({ ...adapterArgs(a), dA: data(a.dA), dB: data(a.dB) })),
      s: this.s, ds: this.ds, xt: this.xt, mask: this.mask, dyg: this.dyg, dx: c.dx ? f.act(c.dx) : null,
    };
  }
}

function adapterArgs(a: MultiLoRAAdapter): MultiLoraAdapterArgs {
  const args: MultiLoraAdapterArgs = { r: a.r, A: data(a.A), B: data(a.B), scaling: a.scaling };
  if (a.dropout > 0) Object.assign(args, { dropoutP: a.dropout, seed: a.seed, step: a.step });
  return args;
}
