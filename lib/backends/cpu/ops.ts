// ops.* on the CPU: the LoRA kernels for frameworks that keep their own parameters (fused or PEFT's
// order, W in either layout, dropout on the LoRA path, dA and dB fresh). The backward's scratch (ds,
// and the LoRA term of dx under dropout) is allocated per call: ops keep no state between calls.
import type { OpsBackward, OpsForward, OpsKernels } from '../backend';
import { allocFloats } from '../../validate';
import { LoraBackwardArgs, LoraForwardArgs, native } from './binding';
import { data } from './storage';

function forwardArgs(c: OpsForward): LoraForwardArgs {
  const args: LoraForwardArgs = {
    M: c.M, I: c.I, O: c.O, r: c.r, x: data(c.x), W: data(c.W), fanInFanOut: c.fanInFanOut, bias: c.bias ? data(c.bias) : null,
    A: data(c.A), B: data(c.B), scaling: c.scaling, fused: c.fused, s: data(c.s), y: data(c.y),
  };
  const d = c.dropout;
  if (d) Object.assign(args, { dropoutP: d.p, seed: d.seed, step: d.step, mask: d.mask, xDrop: data(d.xDrop) });
  return args;
}

function backwardArgs(c: OpsBackward): LoraBackwardArgs {
  const args: LoraBackwardArgs = {
    M: c.M, I: c.I, O: c.O, r: c.r, x: data(c.x), s: data(c.s), dy: data(c.dy), W: data(c.W), fanInFanOut: c.fanInFanOut,
    A: data(c.A), B: data(c.B), scaling: c.scaling, fused: c.fused, ds: allocFloats(c.where, 'ds', c.M * c.r),
    dx: c.dx ? data(c.dx) : null, dA: data(c.dA), dB: data(c.dB), accumulate: false,
  };
  const d = c.dropout;
  if (d) {
    Object.assign(args, { dropoutP: d.p, mask: d.mask, xDrop: data(d.xDrop) });
    if (c.dx) args.loraDx = allocFloats(c.where, 'the LoRA term of dx', c.M * c.I);
  }
  return args;
}

export const cpuOps: OpsKernels = {
  forward: (c) => native.loraForward(forwardArgs(c)),
  forwardAsync: (c) => native.loraForwardAsync(forwardArgs(c)),
  backward: (c) => native.loraBackward(backwardArgs(c)),
  backwardAsync: (c) => native.loraBackwardAsync(backwardArgs(c)),
};
