// The dtypes a tensor can hold, in one place: float32 everywhere; bfloat16 and float16 on the CUDA
// device only (the CPU kernels compute in float32). Element sizes match the CUDA addon's DType.
export type DType = 'float32' | 'bfloat16' | 'float16';
export type Device = 'cpu' | 'cuda';

export const DTYPES: readonly DType[] = Object.freeze(['float32', 'bfloat16', 'float16']);

const BYTES: Readonly<Record<DType, number>> = Object.freeze({ float32: 4, bfloat16: 2, float16: 2 });

export function isDType(v: unknown): v is DType {
  return v === 'float32' || v === 'bfloat16' || v === 'float16';
}

/** Bytes per element of a dtype on the device. */
export function elementBytes(dtype: DType): number {
  return BYTES[dtype];
}
