// The CUDA backend: device memory from the addon's caching allocator (lib/backends/cuda/storage.ts),
// float32, bfloat16 and float16 tensors, our own kernels (native/cuda) behind the CUDA addon. It
// answers where the addon loads and a device does; backendInfo().cuda says why not.
import type { Backend, BackendStatus } from '../backend';
import { devicesOf, DTYPES } from '../../dtype';
import { describe, fail, said } from '../../errors';
import { cudaStatus } from './binding';
import { cudaLinear } from './linear';
import { CudaLinearLoRA } from './linear-lora';
import { CudaMultiLoRA } from './multi-lora';
import { cudaLosses } from './losses';
import { cudaOptimizers } from './optim';
import { DeviceStorage } from './storage';

function status(): BackendStatus {
  const st = cudaStatus();
  const d = st.device;
  return { available: st.available, reason: st.reason, detail: d ? `CUDA device ${d.name} (compute capability ${d.computeCapability})` : '' };
}

export const cudaBackend: Backend = {
  device: 'cuda',
  dtypes: DTYPES.filter((d) => devicesOf(d).includes('cuda')),
  label: 'the CUDA device',
  status,
  alloc(where, _arg, dtype, length, zeroed) {
    const s = DeviceStorage.alloc(dtype, length);
    if (zeroed) s.fill(0, where);
    return s;
  },
  fromHost(values, dtype) {
    const s = DeviceStorage.alloc(dtype, values.length);
    s.write(values, 'upload');
    return s;
  },
  adopt(where, arg, value, dtype) {
    if (ArrayBuffer.isView(value)) {
      fail('ERR_DEVICE', where, arg, 'a cuda Tensor', said(`${describe(value)}, which is host memory`),
        `make a device tensor with tensor(data, shape, { device: 'cuda', dtype: '${dtype}' })`);
    }
    return fail('ERR_ARGUMENT', where, arg, 'a cuda Tensor', value);
  },
  // What it runs: its layer kinds and training kernels; no dropout on the LoRA path, activations or ops yet.
  linear: cudaLinear, linearLoRA: (spec) => new CudaLinearLoRA(spec), loraDropout: false,
  multiLoRALinear: (spec) => new CudaMultiLoRA(spec),
  optimizers: cudaOptimizers, losses: cudaLosses, activations: null, ops: null,
};
