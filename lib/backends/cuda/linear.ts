// The frozen Linear on the CUDA device: y = x·Wᵀ + b is one GEMM with the bias in its epilogue
// ('nt': W stored (O, I) as nn.Linear keeps it), dx = dy·W one more ('nn'). In the compute dtype,
// fp32 accumulation; fp32 through TF32 unless math: 'exact'.
import { cudaBinding } from './binding';
import { Tensor } from '../../tensor';
import { DType } from '../../dtype';
import { deviceExact, deviceOutput, deviceRows } from './inputs';

export type MathMode = 'tf32' | 'exact';

export interface DeviceLinear {
  I: number;
  O: number;
  weight: Tensor;
  bias: Tensor | null;
  dtype: DType;
  math: MathMode;
  /** How the weight and bias are named in messages: '' for a Linear, 'base.' inside a LinearLoRA. */
  prefix: string;
}

/** The device view of a Linear (its public fields); `prefix` names its weight in messages. */
export function deviceLinearOf(l: { inFeatures: number; outFeatures: number; weight: Tensor; bias: Tensor | null; dtype: DType; math: MathMode }, prefix = ''): DeviceLinear {
  return { I: l.inFeatures, O: l.outFeatures, weight: l.weight, bias: l.bias, dtype: l.dtype, math: l.math, prefix };
}

export function deviceLinearForward(where: string, p: DeviceLinear, x: unknown, out: unknown): Tensor {
  const xin = deviceRows(where, 'x', x, p.I, p.dtype);
  const W = deviceExact(where, `${p.prefix}weight`, p.weight, [p.O, p.I], p.dtype);
  const bias = p.bias ? deviceExact(where, `${p.prefix}bias`, p.bias, [p.O], p.dtype) : null;
  const y = deviceOutput(where, out, [...xin.shape.slice(0, -1), p.O], p.dtype,
    [['x', xin.storage], [`${p.prefix}weight`, W.storage], [`${p.prefix}bias`, bias?.storage]]);
  if (xin.M > 0) {
    cudaBinding().gemm({ dtype: p.dtype, math: p.math, bLayout: 'nt', M: xin.M, N: p.O, K: p.I, A: xin.buf, B: W.buf, bias: bias?.buf ?? null, C: y.buf });
  }
  return y.tensor;
}

export function deviceLinearBackward(where: string, p: DeviceLinear, dy: unknown, out: unknown): Tensor {
  const d = deviceRows(where, 'dy', dy, p.O, p.dtype);
  const W = deviceExact(where, `${p.prefix}weight`, p.weight, [p.O, p.I], p.dtype);
  const dx = deviceOutput(where, out, [...d.shape.slice(0, -1), p.I], p.dtype, [['dy', d.storage], [`${p.prefix}weight`, W.storage]]);
  if (d.M > 0) cudaBinding().gemm({ dtype: p.dtype, math: p.math, bLayout: 'nn', M: d.M, N: p.I, K: p.O, A: d.buf, B: W.buf, C: dx.buf });
  return dx.tensor;
}
