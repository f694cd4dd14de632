// The dtypes a tensor can hold, in one table: element bytes (as the CUDA addon's DType stores them),
// the safetensors name, whether this package writes that safetensors dtype, and the devices whose
// backends hold it. float32 and bfloat16 live everywhere (bfloat16 on the CPU: lib/backends/cpu-lowp);
// float16 only on the CUDA device. Placement, tensors, the io code and the CUDA binding's
// argument types all read it from here.
const TABLE = {
  float32: { bytes: 4, safetensors: 'F32', written: true, devices: ['cpu', 'cuda'] },
  bfloat16: { bytes: 2, safetensors: 'BF16', written: true, devices: ['cpu', 'cuda'] },
  float16: { bytes: 2, safetensors: 'F16', written: false, devices: ['cuda'] },
} as const;

type Table = typeof TABLE;
export type DType = keyof Table;
export type Device = Table[DType]['devices'][number];

/** The safetensors names of our dtypes: what this package reads (F32, BF16, F16). */
export type SafetensorsDType = Table[DType]['safetensors'];
/** The safetensors dtypes this package writes. */
export type WrittenSafetensorsDType = { [K in DType]: Table[K]['written'] extends true ? Table[K]['safetensors'] : never }[DType];

export const DTYPES: readonly DType[] = Object.freeze(Object.keys(TABLE) as DType[]);

export function isDType(v: unknown): v is DType {
  return typeof v === 'string' && Object.hasOwn(TABLE, v);
}

/** Bytes per element, as the storage of a device holds it. */
export function elementBytes(dtype: DType): number {
  return TABLE[dtype].bytes;
}

/** Whether a tensor on `device` may hold `dtype`. */
export function allowedOn(dtype: DType, device: Device): boolean {
  return (TABLE[dtype].devices as readonly Device[]).includes(device);
}

/** The devices that hold `dtype`. */
export function devicesOf(dtype: DType): readonly Device[] {
  return TABLE[dtype].devices;
}

export const SAFETENSORS_DTYPES: readonly SafetensorsDType[] = Object.freeze(DTYPES.map((d) => TABLE[d].safetensors));
export const WRITTEN_SAFETENSORS_DTYPES: readonly WrittenSafetensorsDType[] =
  Object.freeze(DTYPES.filter((d) => TABLE[d].written).map((d) => TABLE[d].safetensors as WrittenSafetensorsDType));

export function isSafetensorsDType(v: string): v is SafetensorsDType {
  return (SAFETENSORS_DTYPES as readonly string[]).includes(v);
}

/** Bytes per element of one of our safetensors dtypes. */
export function safetensorsBytes(name: SafetensorsDType): number {
  return TABLE[DTYPES.find((d) => TABLE[d].safetensors === name)!].bytes;
}
