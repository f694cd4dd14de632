// A LinearLoRA over a reduced-precision frozen base on the CPU: the fused (or PEFT-order) forward and
// backward as one native call each over the layer's workspace (lib/backends/cpu/workspace.ts), as
// the float32 CPU backend runs them; the frozen products read Ŵ in its format, A, B, s, ds and the
// gradients are float32, and bf16 activations are widened and rounded natively around the kernels.
import type { LinearLoRAKernels, LinearLoRASpec, LoRABackward, LoRAForward } from '../backend';
import { data } from '../cpu/storage';
import { Workspace } from '../cpu/workspace';
import { lowp, LowpLoraBackwardArgs, LowpLoraForwardArgs } from './binding';
import { act, actKind, bias32, weightArgs } from './operands';

export class LowpLinearLoRA implements LinearLoRAKernels {
  readonly #spec: LinearLoRASpec;
  readonly #ws: Workspace;
  #step = 0;

  constructor(spec: LinearLoRASpec) {
    this.#spec = spec;
    this.#ws = new Workspace(spec.I, spec.r);
  }

  forward(c: LoRAForward): void { lowp.loraForward(this.#forwardArgs(c)); }
  forwardAsync(c: LoRAForward): Promise<void> { return lowp.loraForwardAsync(this.#forwardArgs(c)); }
  backward(c: LoRABackward): void { lowp.loraBackward(this.#backwardArgs(c)); }
  backwardAsync(c: LoRABackward): Promise<void> { return lowp.loraBackwardAsync(this.#backwardArgs(c)); }

  dropoutMask(M: number): Uint8Array {
    return this.#ws.mask.subarray(0, M * this.#spec.I);
  }

  forget(): void {}
  dispose(): void {}

  #forwardArgs(c: LoRAForward): LowpLoraForwardArgs {
    const { I, O, r, fused, dtype } = this.#spec;
    const ws = this.#ws;
    ws.ensure(c.x.M, c.dropout > 0);
    const args: LowpLoraForwardArgs = {
      M: c.x.M, I, O, r, act: actKind(dtype), x: act(c.x), ...weightArgs(c.p.W), bias: bias32(c.p.bias),
      A: data(c.p.A), B: data(c.p.B), scaling: c.p.scaling, fused, s: ws.s, y: act(c.y),
    };
    if (c.dropout > 0) Object.assign(args, { dropoutP: c.dropout, seed: this.#spec.seed, step: this.#step++, mask: ws.mask, xDrop: ws.xDrop });
    return args;
  }

  #backwardArgs(c: LoRABackward): LowpLoraBackwardArgs {
    const { I, O, r, fused, dtype } = this.#spec;
    const ws = this.#ws;
    const args: LowpLoraBackwardArgs = {
      M: c.x.M, I, O, r, act: actKind(dtype), x: act(c.x), s: ws.s, dy: act(c.dy), ...weightArgs(c.p.W),
      A: data(c.p.A), B: data(c.p.B), scaling: c.p.scaling, fused, ds: ws.ds, dx: c.dx ? act(c.dx) : null,
      dA: data(c.dA), dB: data(c.dB), accumulate: true,
    };
    if (c.dropout > 0) Object.assign(args, { dropoutP: c.dropout, mask: ws.mask, xDrop: ws.xDrop, loraDx: ws.loraDx });
    return args;
  }
}
