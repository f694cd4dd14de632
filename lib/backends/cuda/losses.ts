// The losses on the CUDA device: one kernel each writes the gradient (in the prediction's dtype) and
// the mean loss (fp32, one number). The loss comes back to the host as a number, so these wait for
// the device, as PyTorch's loss.item() does; the gradient stays on the device for backward().
import type { LossKernels } from '../backend';
import { cudaBinding, DeviceBuffer } from './binding';
import { buf, DeviceStorage } from './storage';

/** Runs `kernel` with a one-element fp32 loss buffer and returns its value. */
function withLoss(where: string, kernel: (loss: DeviceBuffer) => void): number {
  const loss = DeviceStorage.alloc('float32', 1);
  try {
    kernel(loss.buffer(where));
    return loss.hostCopy(where)[0];
  } finally {
    loss.release();
  }
}

export const cudaLosses: LossKernels = {
  mse(where, y, target, grad) {
    const dtype = y.storage.dtype;
    return withLoss(where, (loss) => cudaBinding().mseLoss({ dtype, n: y.n, pred: buf(where, y), target: buf(where, target), loss, dpred: buf(where, grad) }));
  },
  crossEntropy(where, logits, M, C, labels, grad) {
    const cu = cudaBinding();
    const lab = cu.alloc(4 * M);
    try {
      cu.upload({ buffer: lab, dtype: 'int32', data: labels });
      return withLoss(where, (loss) => cu.crossEntropyLoss({ dtype: logits.storage.dtype, N: M, C, logits: buf(where, logits), labels: lab, loss, dlogits: buf(where, grad) }));
    } finally {
      lab.dispose();
    }
  },
};
