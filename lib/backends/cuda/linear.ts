// The frozen Linear on the CUDA device: y = x·Wᵀ + b is one GEMM with the bias in its epilogue
// ('nt': W stored (O, I) as nn.Linear keeps it), dx = dy·W one more ('nn'). In the compute dtype,
// fp32 accumulation; fp32 through TF32 unless math: 'exact'. Every op only enqueues work on the
// addon's stream; the async twins wait for it off the JS thread.
import type { LinearBackward, LinearForward, LinearKernels, LinearSpec } from '../backend';
import { cudaBinding } from './binding';
import { buf } from './storage';
import { whenDeviceDone } from './sync';

export function cudaLinear(spec: LinearSpec): LinearKernels {
  const { I, O, dtype, math } = spec;
  const forward = (c: LinearForward): void => {
    if (c.x.M === 0) return;
    cudaBinding().gemm({
      dtype, math, bLayout: 'nt', M: c.x.M, N: O, K: I,
      A: buf(c.where, c.x), B: buf(c.where, c.W), bias: c.bias ? buf(c.where, c.bias) : null, C: buf(c.where, c.y),
    });
  };
  const backward = (c: LinearBackward): void => {
    if (c.dy.M === 0) return;
    cudaBinding().gemm({ dtype, math, bLayout: 'nn', M: c.dy.M, N: I, K: O, A: buf(c.where, c.dy), B: buf(c.where, c.W), C: buf(c.where, c.dx) });
  };
  return {
    forward,
    forwardAsync: (c) => whenDeviceDone(forward(c)),
    backward,
    backwardAsync: (c) => whenDeviceDone(backward(c)),
  };
}
