// The losses on the CPU: one native pass writes the gradient and returns the mean loss (in double).
import type { LossKernels } from '../backend';
import { native } from './binding';
import { data } from './storage';

export const cpuLosses: LossKernels = {
  mse: (_where, y, target, grad) => native.mseLoss({ n: y.n, y: data(y), target: data(target), grad: data(grad) }),
  crossEntropy: (_where, logits, M, C, labels, grad) => native.crossEntropyLoss({ M, C, logits: data(logits), labels, grad: data(grad) }),
};
