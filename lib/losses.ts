// Losses that return the loss and its gradient with respect to the prediction in one native pass:
// the gradient is the `dy` a model's backward() starts from. Both reduce by the mean, as PyTorch's
// default reduction='mean'. Non-finite inputs are computed through, as PyTorch does (a NaN logit
// gives a NaN loss); only what would make the kernel read out of bounds (a label outside [0, C)) is
// refused.
import { native } from './binding';
import { output, resolve, resolveExact, TensorLike } from './inputs';
import { OutOptions } from './linear';
import { Tensor } from './tensor';
import { checkOptions, fail, isInt, shapeString } from './validate';

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
  const opts = checkOptions<OutOptions>(where, options);
  const yin = y instanceof Float32Array && target instanceof Tensor ? resolveExact(where, 'y', y, target.shape) : resolve(where, 'y', y);
  const t = resolveExact(where, 'target', target, yin.shape);
  // The mean of nothing is NaN in PyTorch (with a warning); here it is a shape error.
  if (yin.data.length === 0) fail('ERR_SHAPE', where, 'y', 'at least one element', `shape ${shapeString(yin.shape)}`);
  const grad = output(where, opts.out, yin.shape);
  checkNoOverlap(where, grad, [['y', yin.data], ['target', t.data]]);
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
  const opts = checkOptions<OutOptions>(where, options);
  const lab = labelArray(where, labels);
  const M = lab.length;
  const lg = resolve(where, 'logits', logits, (n) => (M > 0 && n % M === 0 ? [M, n / M] : [n]));
  if (lg.shape.length !== 2) fail('ERR_SHAPE', where, 'logits', 'a 2-d tensor (M, C)', `shape ${shapeString(lg.shape)}`);
  const [rows, C] = lg.shape;
  if (rows !== M) fail('ERR_SHAPE', where, 'labels', `${rows} labels, one per row of logits ${shapeString(lg.shape)}`, `${M} labels`);
  if (M === 0 || C === 0) fail('ERR_SHAPE', where, 'logits', 'at least one row and one class', `shape ${shapeString(lg.shape)}`);
  for (let m = 0; m < M; m++) {
    const v = lab.values[m];
    if (!isInt(v) || v < 0 || v >= C) fail('ERR_ARGUMENT', where, `labels[${m}]`, `a class index, an integer in [0, ${C})`, v);
  }
  const grad = output(where, opts.out, lg.shape);
  checkNoOverlap(where, grad, [['logits', lg.data]]);
  const loss = native.crossEntropyLoss({ M, C, logits: lg.data, labels: lab.ints(), grad: grad.buffer(`${where}: out`) });
  return { loss, grad };
}

/** The labels' values (for checking) and, once checked, an Int32Array of them (no copy of an Int32Array). */
function labelArray(where: string, labels: unknown): { length: number; values: ArrayLike<number>; ints: () => Int32Array } {
  if (labels instanceof Int32Array) return { length: labels.length, values: labels, ints: () => labels };
  if (labels instanceof Tensor) {
    if (labels.shape.length !== 1) fail('ERR_SHAPE', where, 'labels', 'a 1-d tensor (M)', `shape ${shapeString(labels.shape)}`);
    const data = labels.buffer(`${where}: labels`);
    return { length: data.length, values: data, ints: () => Int32Array.from(data) };
  }
  if (Array.isArray(labels)) return { length: labels.length, values: labels as number[], ints: () => Int32Array.from(labels as number[]) };
  if (ArrayBuffer.isView(labels)) fail('ERR_DTYPE', where, 'labels', 'an Int32Array (or an array of integers, or a Tensor)', labels);
  return fail('ERR_ARGUMENT', where, 'labels', 'an Int32Array, an array of integers or a Tensor of class indices', labels);
}

/** The kernels write the gradient while still reading the inputs: `out` must not share their memory. */
function checkNoOverlap(where: string, out: Tensor, inputs: Array<[string, Float32Array]>): void {
  const o = out.buffer(`${where}: out`);
  for (const [name, a] of inputs) {
    if (a.buffer === o.buffer && a.byteOffset < o.byteOffset + o.byteLength && o.byteOffset < a.byteOffset + a.byteLength) {
      fail('ERR_ARGUMENT', where, 'options.out', `a tensor that does not share memory with ${name}`, `one that overlaps ${name}`);
    }
  }
}
