// The frozen Linear over a reduced-precision weight (bf16, int8 or nf4) on the CPU: y = x·Ŵᵀ + b and
// dx = dy·Ŵ, one native call each, sync or on the libuv pool; activations in the layer's dtype.
import type { LinearBackward, LinearForward, LinearKernels, LinearSpec } from '../backend';
import { lowp, LowpLinearBackwardArgs, LowpLinearForwardArgs } from './binding';
import { act, actKind, bias32, weightArgs } from './operands';

export function lowpLinear(spec: LinearSpec): LinearKernels {
  const { I, O } = spec;
  const kind = actKind(spec.dtype);
  const forwardArgs = (c: LinearForward): LowpLinearForwardArgs =>
    ({ M: c.x.M, I, O, act: kind, x: act(c.x), ...weightArgs(c.W), bias: bias32(c.bias), y: act(c.y) });
  const backwardArgs = (c: LinearBackward): LowpLinearBackwardArgs =>
    ({ M: c.dy.M, I, O, act: kind, dy: act(c.dy), ...weightArgs(c.W), dx: act(c.dx) });
  return {
    forward: (c) => lowp.linearForward(forwardArgs(c)),
    forwardAsync: (c) => lowp.linearForwardAsync(forwardArgs(c)),
    backward: (c) => lowp.linearBackward(backwardArgs(c)),
    backwardAsync: (c) => lowp.linearBackwardAsync(backwardArgs(c)),
  };
}
