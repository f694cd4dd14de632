// Losses and activations of bfloat16 tensors on the CPU: each operand widened to float32 (natively),
// the float32 CPU kernel run on the copies, and the result rounded back. They are elementwise passes
// next to a layer's GEMMs, so the copies cost little and no second set of kernels exists.
import type { ActivationKernels, LossKernels, Operand } from '../backend';
import { cpuActivations } from '../cpu/activations';
import { cpuLosses } from '../cpu/losses';
import { CpuStorage } from '../cpu/storage';

function f32(o: Operand, where: string): Operand {
  return { storage: new CpuStorage(o.storage.hostView(where)), shape: o.shape, n: o.n };
}
function scratch(o: Operand): Operand {
  return { storage: new CpuStorage(new Float32Array(o.n)), shape: o.shape, n: o.n };
}
function back(from: Operand, to: Operand, where: string): void {
  to.storage.write(from.storage.hostView(where), where);
}

export const widenedLosses: LossKernels = {
  mse(where, y, target, grad) {
    const g = scratch(grad);
    const loss = cpuLosses.mse(where, f32(y, where), f32(target, where), g);
    back(g, grad, where);
    return loss;
  },
  crossEntropy(where, logits, M, C, labels, grad) {
    const g = scratch(grad);
    const loss = cpuLosses.crossEntropy(where, f32(logits, where), M, C, labels, g);
    back(g, grad, where);
    return loss;
  },
};

export const widenedActivations: ActivationKernels = {
  forward(kind, x, y) {
    const out = scratch(y);
    cpuActivations.forward(kind, f32(x, 'activation'), out);
    back(out, y, 'activation');
  },
  backward(kind, x, dy, dx) {
    const out = scratch(dx);
    cpuActivations.backward(kind, f32(x, 'activation'), f32(dy, 'activation'), out);
    back(out, dx, 'activation');
  },
};
