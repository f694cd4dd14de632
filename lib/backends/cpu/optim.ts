// The optimizers' per-parameter updates on the CPU, in place, one native call per parameter tensor.
// The argument objects are built once and refilled, so a step allocates nothing; their arrays are let
// go after each call, so they keep no parameter alive.
import type { AdamWStep, OptimizerKernels, SGDStep, TensorStorage } from '../backend';
import { AdamWStepArgs, native, SgdStepArgs } from './binding';

const NONE = new Float32Array(0);
const adamw: AdamWStepArgs = { n: 0, param: NONE, grad: NONE, expAvg: NONE, expAvgSq: NONE, lr: 0, beta1: 0, beta2: 0, eps: 0, weightDecay: 0, step: 0 };
const sgd: SgdStepArgs = { n: 0, param: NONE, grad: NONE, momentumBuffer: null, lr: 0, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false, firstStep: true };

const host = (s: TensorStorage): Float32Array => s.hostArray!;

export const cpuOptimizers: OptimizerKernels = {
  adamw(param: TensorStorage, grad: TensorStorage, expAvg: TensorStorage, expAvgSq: TensorStorage, h: AdamWStep): void {
    const a = adamw;
    a.n = param.length; a.param = host(param); a.grad = host(grad); a.expAvg = host(expAvg); a.expAvgSq = host(expAvgSq);
    a.lr = h.lr; a.beta1 = h.beta1; a.beta2 = h.beta2; a.eps = h.eps; a.weightDecay = h.weightDecay; a.step = h.step;
    try {
      native.adamwStep(a);
    } finally {
      a.param = a.grad = a.expAvg = a.expAvgSq = NONE;
    }
  },
  sgd(param: TensorStorage, grad: TensorStorage, momentumBuffer: TensorStorage | null, h: SGDStep): void {
    const a = sgd;
    a.n = param.length; a.param = host(param); a.grad = host(grad); a.momentumBuffer = momentumBuffer ? host(momentumBuffer) : null;
    a.lr = h.lr; a.momentum = h.momentum; a.dampening = h.dampening; a.weightDecay = h.weightDecay; a.nesterov = h.nesterov; a.firstStep = h.firstStep;
    try {
      native.sgdStep(a);
    } finally {
      a.param = a.grad = NONE;
      a.momentumBuffer = null;
    }
  },
};
