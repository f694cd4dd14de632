// The optimizers on the CUDA device: parameters there (LoRA's fp32 masters) are stepped by the
// addon's AdamW kernel, with their state (exp_avg, exp_avg_sq) in device memory. SGD has no device
// kernel yet.
import type { AdamWStep, OptimizerKernels, TensorStorage } from '../backend';
import { cudaBinding } from './binding';
import { DeviceStorage } from './storage';

const WHERE = 'AdamW.step';
const b = (s: TensorStorage) => (s as DeviceStorage).buffer(WHERE);

export const cudaOptimizers: OptimizerKernels = {
  adamw(param: TensorStorage, grad: TensorStorage, expAvg: TensorStorage, expAvgSq: TensorStorage, h: AdamWStep): void {
    if (param.length === 0) return;
    cudaBinding().adamw({
      n: param.length, param: b(param), grad: b(grad), m: b(expAvg), v: b(expAvgSq),
      lr: h.lr, beta1: h.beta1, beta2: h.beta2, eps: h.eps, weightDecay: h.weightDecay, step: h.step,
    });
  },
  sgd: null,
};
