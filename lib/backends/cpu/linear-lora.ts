// A LinearLoRA on the CPU: the fused (or PEFT-order) forward and backward as one native call each,
// over the layer's workspace (s, ds and the dropout buffers, lib/backends/cpu/workspace.ts). The
// fused path folds scaling into the GEMMs' alpha and adds each product into its output with beta = 1
// (docs/ARCHITECTURE.md, "Layouts and the math"). Dropout masks are a counter-based hash of (seed,
// step, element), drawn natively; the step counts the forwards that drew one.
import type { LinearLoRAKernels, LinearLoRASpec, LoRABackward, LoRAForward } from '../backend';
import { LoraBackwardArgs, LoraForwardArgs, native } from './binding';
import { data } from './storage';
import { Workspace } from './workspace';

export class CpuLinearLoRA implements LinearLoRAKernels {
  readonly #spec: LinearLoRASpec;
  readonly #ws: Workspace;
  #step = 0;

  constructor(spec: LinearLoRASpec) {
    this.#spec = spec;
    this.#ws = new Workspace(spec.I, spec.r);
  }

  forward(c: LoRAForward): void {
    native.loraForward(this.#forwardArgs(c));
  }

  forwardAsync(c: LoRAForward): Promise<void> {
    return native.loraForwardAsync(this.#forwardArgs(c));
  }

  backward(c: LoRABackward): void {
    native.loraBackward(this.#backwardArgs(c));
  }

  backwardAsync(c: LoRABackward): Promise<void> {
    return native.loraBackwardAsync(this.#backwardArgs(c));
  }

  dropoutMask(M: number): Uint8Array {
    return this.#ws.mask.subarray(0, M * this.#spec.I);
  }

  forget(): void {}

  dispose(): void {}

  #forwardArgs(c: LoRAForward): LoraForwardArgs {
    const { I, O, r, fused } = this.#spec;
    const ws = this.#ws;
    ws.ensure(c.x.M, c.dropout > 0);
    const args: LoraForwardArgs = {
      M: c.x.M, I, O, r, x: data(c.x), W: data(c.p.W), bias: c.p.bias ? data(c.p.bias) : null, A: data(c.p.A), B: data(c.p.B),
      scaling: c.p.scaling, fused, s: ws.s, y: data(c.y),
    };
    if (c.dropout > 0) Object.assign(args, { dropoutP: c.dropout, seed: this.#spec.seed, step: this.#step++, mask: ws.mask, xDrop: ws.xDrop });
    return args;
  }

  #backwardArgs(c: LoRABackward): LoraBackwardArgs {
    const { I, O, r, fused } = this.#spec;
    const ws = this.#ws;
    const args: LoraBackwardArgs = {
      M: c.x.M, I, O, r, x: data(c.x), s: ws.s, dy: data(c.dy), W: data(c.p.W), A: data(c.p.A), B: data(c.p.B),
      scaling: c.p.scaling, fused, ds: ws.ds, dx: c.dx ? data(c.dx) : null, dA: data(c.dA), dB: data(c.dB),
      accumulate: true,
    };
    if (c.dropout > 0) Object.assign(args, { dropoutP: c.dropout, mask: ws.mask, xDrop: ws.xDrop, loraDx: ws.loraDx });
    return args;
  }
}
