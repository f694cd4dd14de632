// The losses on the CUDA device: one kernel each writes the gradient (in the prediction's dtype) and
// the mean loss (fp32, one number). The loss comes back to the host as a number, so these wait for
// the device, as PyTorch's loss.item() does; the gradient stays on the device for backward().
import { cudaBinding } from './binding';
import { LoraError } from '../../errors';
import { Tensor } from '../../tensor';
import { shapeString } from '../../validate';
import { deviceExact, deviceOutput, deviceTensor } from './inputs';
import { DeviceStorage } from './storage';

export interface DeviceLossResult {
  loss: number;
  grad: Tensor;
}

/** Runs `kernel` with a one-element fp32 loss buffer and returns its value. */
function withLoss(where: string, kernel: (loss: ReturnType<DeviceStorage['buffer']>) => void): number {
  const loss = DeviceStorage.alloc('float32', 1);
  try {
    kernel(loss.buffer(where));
    return loss.download(where)[0];
  } finally {
    loss.release();
  }
}

export function deviceMseLoss(where: string, y: Tensor, target: unknown, out: unknown): DeviceLossResult {
  const dtype = y.dtype;
  const yin = deviceTensor(where, 'y', y, dtype);
  if (yin.n === 0) throw new LoraError('ERR_SHAPE', `${where}: expected at least one element for y but received shape ${shapeString(yin.shape)}`);
  const t = deviceExact(where, 'target', target, yin.shape, dtype);
  const grad = deviceOutput(where, out, yin.shape, dtype, [['y', yin.storage], ['target', t.storage]]);
  const loss = withLoss(where, (l) => cudaBinding().mseLoss({ dtype, n: yin.n, pred: yin.buf, target: t.buf, loss: l, dpred: grad.buf }));
  return { loss, grad: grad.tensor };
}

/**
 * Cross-entropy of device logits (M, C); `labels(C)` checks the M labels against C on the host and
 * returns them as int32, which are uploaded for the kernel.
 */
export function deviceCrossEntropyLoss(where: string, logits: Tensor, M: number, labels: (C: number) => Int32Array, out: unknown): DeviceLossResult {
  const dtype = logits.dtype;
  const lg = deviceTensor(where, 'logits', logits, dtype);
  if (lg.shape.length !== 2) throw new LoraError('ERR_SHAPE', `${where}: expected a 2-d tensor (M, C) for logits but received shape ${shapeString(lg.shape)}`);
  const [rows, C] = lg.shape;
  if (rows !== M) throw new LoraError('ERR_SHAPE', `${where}: expected ${rows} labels, one per row of logits ${shapeString(lg.shape)} for labels but received ${M} labels`);
  if (M === 0 || C === 0) throw new LoraError('ERR_SHAPE', `${where}: expected at least one row and one class for logits but received shape ${shapeString(lg.shape)}`);
  const ints = labels(C);
  const grad = deviceOutput(where, out, lg.shape, dtype, [['logits', lg.storage]]);
  const cu = cudaBinding();
  const lab = cu.alloc(4 * M);
  try {
    cu.upload({ buffer: lab, dtype: 'int32', data: ints });
    const loss = withLoss(where, (l) => cu.crossEntropyLoss({ dtype, N: M, C, logits: lg.buf, labels: lab, loss: l, dlogits: grad.buf }));
    return { loss, grad: grad.tensor };
  } finally {
    lab.dispose();
  }
}
