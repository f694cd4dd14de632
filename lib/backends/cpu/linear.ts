// The frozen Linear on the CPU: y = x·Wᵀ + b and dx = dy·W, one native call each (the BLAS found at
// run time, or the built-in GEMM), sync or on the libuv pool.
import type { LinearBackward, LinearForward, LinearKernels, LinearSpec } from '../backend';
import { LinearBackwardArgs, LinearForwardArgs, native } from './binding';
import { data } from './storage';

export function cpuLinear(spec: LinearSpec): LinearKernels {
  const { I, O } = spec;
  const forwardArgs = (c: LinearForward): LinearForwardArgs =>
    ({ M: c.x.M, I, O, x: data(c.x), W: data(c.W), bias: c.bias ? data(c.bias) : null, y: data(c.y) });
  const backwardArgs = (c: LinearBackward): LinearBackwardArgs => ({ M: c.dy.M, I, O, dy: data(c.dy), W: data(c.W), dx: data(c.dx) });
  return {
    forward: (c) => native.linearForward(forwardArgs(c)),
    forwardAsync: (c) => native.linearForwardAsync(forwardArgs(c)),
    backward: (c) => native.linearBackward(backwardArgs(c)),
    backwardAsync: (c) => native.linearBackwardAsync(backwardArgs(c)),
  };
}
