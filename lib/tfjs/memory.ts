// The memory of the tfjs backends our kernels run on, read and written in place: the cpu backend's
// typed arrays, and the wasm backend's heap at each tensor's offset. Outputs are allocated by the
// backend itself, so the tensors tfjs hands back own their memory as any other op's do.
import type { DataType, TensorInfo } from '@tensorflow/tfjs-core';
import { fail, said } from '../errors';
import { tf } from './peer';

/** The backends whose memory we reach. Any other runs the fallback (fallback.ts). */
export const FUSED_BACKENDS: readonly string[] = ['cpu', 'wasm'];

export interface BackendMemory {
  /**
   * A new (uninitialised) tensor of the backend. Allocate every output before taking any view: an
   * allocation can grow the wasm heap, which detaches the views taken before it.
   */
  output(shape: number[], dtype: 'float32' | 'bool'): TensorInfo;
  /** The float32 values of `t` where the backend keeps them (no copy). */
  floats(t: TensorInfo): Float32Array;
  /** The bytes of a bool tensor (no copy). */
  bytes(t: TensorInfo): Uint8Array;
  /** Frees an output that will not be returned (a kernel that failed halfway). */
  release(t: TensorInfo): void;
}

// The parts of MathBackendCPU and BackendWasm we use, by shape (the backend packages are the
// caller's, and only one of them may be installed).
interface CpuBackend {
  data: { get(dataId: object): { values?: unknown } | undefined };
  makeTensorInfo(shape: number[], dtype: DataType, values: Float32Array | Uint8Array): TensorInfo;
  disposeData(dataId: object, force?: boolean): boolean;
}
interface WasmBackend {
  wasm: { HEAPU8: Uint8Array };
  dataIdMap: { get(dataId: object): { memoryOffset: number | null } | undefined };
  makeOutput(shape: number[], dtype: DataType): TensorInfo;
  disposeData(dataId: object, force?: boolean): boolean;
}

const size = (t: TensorInfo) => tf.util.sizeFromShape(t.shape);

function broken(what: string): never {
  return fail('ERR_BACKEND', 'fused-lora/tfjs', 'the tfjs backend', `a tensor's ${what}`, said('none (is this tfjs-backend version one this package supports?)'));
}

function cpuMemory(b: CpuBackend): BackendMemory {
  const values = (t: TensorInfo) => b.data.get(t.dataId)?.values;
  return {
    // A fresh typed array handed to the backend as the tensor's values: an allocation, not a copy.
    output: (shape, dtype) => b.makeTensorInfo(shape, dtype, dtype === 'bool' ? new Uint8Array(tf.util.sizeFromShape(shape)) : new Float32Array(tf.util.sizeFromShape(shape))),
    floats(t) {
      const v = values(t);
      return v instanceof Float32Array ? v : broken('Float32Array');
    },
    bytes(t) {
      const v = values(t);
      return v instanceof Uint8Array ? v : broken('Uint8Array');
    },
    release: (t) => void b.disposeData(t.dataId, true),
  };
}

function wasmMemory(b: WasmBackend): BackendMemory {
  const offset = (t: TensorInfo) => b.dataIdMap.get(t.dataId)?.memoryOffset ?? broken('heap offset');
  return {
    output: (shape, dtype) => b.makeOutput(shape, dtype),
    // Views of the heap as it is now (it moves when it grows).
    floats: (t) => new Float32Array(b.wasm.HEAPU8.buffer, offset(t), size(t)),
    bytes: (t) => new Uint8Array(b.wasm.HEAPU8.buffer, offset(t), size(t)),
    release: (t) => void b.disposeData(t.dataId, true),
  };
}

export function memoryOf(backendName: string, backend: unknown): BackendMemory {
  if (backendName === 'cpu') return cpuMemory(backend as CpuBackend);
  if (backendName === 'wasm') return wasmMemory(backend as WasmBackend);
  return fail('ERR_BACKEND', 'fused-lora/tfjs', 'the tfjs backend', `one of ${FUSED_BACKENDS.join(', ')}`, backendName);
}
