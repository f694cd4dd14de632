// Losses that return the loss and its gradient with respect to the prediction in one pass: the
// gradient is the `dy` a model's backward() starts from. Both reduce by the mean, as PyTorch's default
// reduction='mean'. Non-finite inputs are computed through, as PyTorch does (a NaN logit gives a NaN
// loss); only what would make a kernel read out of bounds (a label outside [0, C)) is refused. A loss
// runs where its prediction lives (the target must be there too, in its dtype); the gradient stays
// there, and the loss (a number) waits for a device.
import { backendFor } from './backends/registry';
import { fail, said } from './errors';
import { OUT_KEYS, OutOptions } from './linear';
import { exact, operand, output, TensorLike } from './operands';
import { HOST, placementOf } from './placement';
import { Tensor } from './tensor';
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
  const on = y instanceof Tensor ? placementOf(y) : HOST;
  const yin = y instanceof Float32Array && target instanceof Tensor ? exact(where, 'y', y, target.shape, on) : operand(where, 'y', y, on);
  const t = exact(where, 'target', target, yin.shape, on);
  // The mean of nothing is NaN in PyTorch (with a warning); here it is a shape error.
  if (yin.n === 0) fail('ERR_SHAPE', where, 'y', 'at least one element', said(`shape ${shapeString(yin.shape)}`));
  const grad = output(where, opts.out, yin.shape, on, [['y', yin], ['target', t]]);
  return { loss: backendFor(on).losses.mse(where, yin, t, grad.op), grad: grad.tensor };
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
  const on = logits instanceof Tensor ? placementOf(logits) : HOST;
  const lg = operand(where, 'logits', logits, on, (n) => (M > 0 && n % M === 0 ? [M, n / M] : [n]));
  if (lg.shape.length !== 2) fail('ERR_SHAPE', where, 'logits', 'a 2-d tensor (M, C)', said(`shape ${shapeString(lg.shape)}`));
  const [rows, C] = lg.shape;
  if (rows !== M) fail('ERR_SHAPE', where, 'labels', `${rows} labels, one per row of logits ${shapeString(lg.shape)}`, said(`${M} labels`));
  if (M === 0 || C === 0) fail('ERR_SHAPE', where, 'logits', 'at least one row and one class', said(`shape ${shapeString(lg.shape)}`));
  const ints = checkLabels(where, lab, C);
  const grad = output(where, opts.out, lg.shape, on, [['logits', lg]]);
  return { loss: backendFor(on).losses.crossEntropy(where, lg, M, C, ints, grad.op), grad: grad.tensor };
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
    if (labels.shape.length !== 1) fail('ERR_SHAPE', where, 'labels', 'a 1-d tensor (M)', said(`shape ${shapeString(labels.shape)}`));
    const data = labels.hostView(where, 'labels');  // labels are checked on the host
    return { length: data.length, values: data, ints: () => Int32Array.from(data) };
  }
  if (Array.isArray(labels)) return { length: labels.length, values: labels as number[], ints: () => Int32Array.from(labels as number[]) };
  if (ArrayBuffer.isView(labels)) fail('ERR_DTYPE', where, 'labels', 'an Int32Array (or an array of integers, or a Tensor)', labels);
  return fail('ERR_ARGUMENT', where, 'labels', 'an Int32Array, an array of integers or a Tensor of class indices', labels);
}
