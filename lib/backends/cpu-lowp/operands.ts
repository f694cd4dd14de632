// Operands of the reduced-precision CPU backend as the addon takes them: a frozen weight in its
// format, activations as float32 or bf16 bits, and a bias widened to float32 (once per version of a
// bf16 bias: it is small, and the kernels add it in fp32).
import type { Operand, TensorStorage } from '../backend';
import { CpuStorage } from '../cpu/storage';
import type { Act, WeightArgs } from './binding';
import { Bf16Storage, QuantStorage } from './storage';

export function weightArgs(W: Operand): WeightArgs {
  const s = W.storage;
  if (s instanceof QuantStorage) return s.weightArgs();
  if (s instanceof Bf16Storage) return { wFormat: 'bf16', W: s.data };
  return { wFormat: 'f32', W: (s as CpuStorage).data };
}

/** 'bf16' where the layer's activations are bfloat16. */
export function actKind(dtype: string): 'f32' | 'bf16' {
  return dtype === 'bfloat16' ? 'bf16' : 'f32';
}

export function act(o: Operand): Act {
  const s = o.storage;
  return s instanceof Bf16Storage ? s.data : (s as CpuStorage).data;
}

const widened = new WeakMap<TensorStorage, { version: number; values: Float32Array }>();

export function bias32(o: Operand | null): Float32Array | null {
  if (o === null) return null;
  const s = o.storage;
  if (s instanceof CpuStorage) return s.data;
  const hit = widened.get(s);
  if (hit && hit.version === s.version) return hit.values;
  const values = s.hostView('bias');
  widened.set(s, { version: s.version, values });
  return values;
}
