// Losses that return the loss and its gradient with respect to the prediction in one native pass:
// the gradient is the `dy` a model's backward() starts from. Both reduce by the mean, as PyTorch's
// default reduction='mean'. Non-finite inputs are computed through, as PyTorch does (a NaN logit
// gives a NaN loss); only what would make the kernel read out of bounds (a label outside [0, C)) is
// refused. With a prediction on the CUDA device the loss runs there (lib/device/losses.ts): the
// target must be a cuda tensor of its dtype, the gradient stays on the device, and the loss (a number)
// waits for the device.
import { native } from './backends/cpu/binding';
import { deviceCrossEntropyLoss, deviceMseLoss } from './backends/cuda/losses';
import { output, resolve, resolveExact, TensorLike } from './inputs';
import { OUT_KEYS, OutOptions } from './linear';
import { Tensor } from './tensor';
import { fail } from './errors';
import { checkOptions, isInt, shapeString } from './validate';

export interface LossResult {
  /** The mean loss, computed in double. */
  loss: number;
  /** dLoss/dprediction, of the prediction's shape. */
  grad: Tensor;
}

/** Class indices: an Int32Array (used as is), an array of integers, or a Tensor of integer values. */
export type Labels = Int32Array | readonly number[] | Tensor;

/**
 * Mean squared error over all elements: loss = mean((y − target)²), grad = 2·(y − target)/n.
 * target must have y's shape (no broadcasting); a Float32Array takes the other's shape when its
 * length matches. `options.out` receives the gradient (so a training loop need not allocate it).
 */
export function mseLoss(y: TensorLike, target: TensorLike, options?: OutOptions): LossResult {
  const where = 'mseLoss';
  const opts = checkOptions(where, options, OUT_KEYS);
  if (y instanceof Tensor && y.device === 'cuda') return deviceMseLoss(where, y, target, opts.out);
  const yin = y instanceof Float32Array && target instanceof Tensor ? resolveExact(where, 'y', y, target.shape) : resolve(where, 'y', y);
  const t = resolveExact(where, 'target', target, yin.shape);
  // The mean of nothing is NaN in PyTorch (with a warning); here it is a shape error.
  if (yin.data.length === 0) fail('ERR_SHAPE', where, 'y', 'at least one element', `shape ${shapeString(yin.shape)}`);
  const grad = output(where, opts.out, yin.shape, [['y', yin.data], ['target', t.data]]);
  const loss = native.mseLoss({ n: yin.data.length, y: yin.data, target: t.data, grad: grad.buffer(`${where}: out`) });
  return { loss, grad };
}

/**
 * Cross-entropy of logits (M, C) against M class indices: loss = mean over rows of
 * −log softmax(logits)[label], grad = (softmax − onehot)/M. The softmax subtracts each row's max and
 * takes the log-sum-exp in double, so logits like ±1000 give finite results. A Float32Array of logits
 * is read as (labels.length, length / labels.length). Every label must be an integer in [0, C)
 * (ERR_ARGUMENT otherwise; there is no ignore_index). `options.out` receives the gradient.
 */
export function crossEntropyLoss(logits: TensorLike, labels: Labels, options?: OutOptions): LossResult {
  const where = 'crossEntropyLoss';
  const opts = checkOptions(where, options, OUT_KEYS);
  const lab = labelArray(where, labels);
  const M = lab.length;
  if (logits instanceof Tensor && logits.device === 'cuda') {
    return deviceCrossEntropyLoss(where, logits, M, (C) => checkLabels(where, lab, C), opts.out);
  }
  const lg = resolve(where, 'logits', logits, (n) => (M > 0 && n % M === 0 ? [M, n / M] : [n]));
  if (lg.shape.length !== 2) fail('ERR_SHAPE', where, 'logits', 'a 2-d tensor (M, C)', `shape ${shapeString(lg.shape)}`);
  const [rows, C] = lg.shape;
  if (rows !== M) fail('ERR_SHAPE', where, 'labels', `${rows} labels, one per row of logits ${shapeString(lg.shape)}`, `${M} labels`);
  if (M === 0 || C === 0) fail('ERR_SHAPE', where, 'logits', 'at least one row and one class', `shape ${shapeString(lg.shape)}`);
  const ints = checkLabels(where, lab, C);
  const grad = output(where, opts.out, lg.shape, [['logits', lg.data]]);
  const loss = native.crossEntropyLoss({ M, C, logits: lg.data, labels: ints, grad: grad.buffer(`${where}: out`) });
  return { loss, grad };
}

/** Every label an integer in [0, C) (ERR_ARGUMENT naming the first that is not); then as an Int32Array. */
function checkLabels(where: string, lab: { length: number; values: ArrayLike<number>; ints: () => Int32Array }, C: number): Int32Array {
  for (let m = 0; m < lab.length; m++) {
    const v = lab.values[m];
    if (!isInt(v) || v < 0 || v >= C) fail('ERR_ARGUMENT', where, `labels[${m}]`, `a class index, an integer in [0, ${C})`, v);
  }
  return lab.ints();
}

/** The labels' values (for checking) and, once checked, an Int32Array of them (no copy of an Int32Array). */
function labelArray(where: string, labels: unknown): { length: number; values: ArrayLike<number>; ints: () => Int32Array } {
  if (labels instanceof Int32Array) return { length: labels.length, values: labels, ints: () => labels };
  if (labels instanceof Tensor) {
    if (labels.shape.length !== 1) fail('ERR_SHAPE', where, 'labels', 'a 1-d tensor (M)', `shape ${shapeString(labels.shape)}`);
    const data = labels.device === 'cuda' ? labels.dataSync() : labels.buffer(`${where}: labels`);  // labels are checked on the host
    return { length: data.length, values: data, ints: () => Int32Array.from(data) };
  }
  if (Array.isArray(labels)) return { length: labels.length, values: labels as number[], ints: () => Int32Array.from(labels as number[]) };
  if (ArrayBuffer.isView(labels)) fail('ERR_DTYPE', where, 'labels', 'an Int32Array (or an array of integers, or a Tensor)', labels);
  return fail('ERR_ARGUMENT', where, 'labels', 'an Int32Array, an array of integers or a Tensor of class indices', labels);
}
