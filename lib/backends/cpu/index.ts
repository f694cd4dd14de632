// The CPU backend (float32): host memory, the CPU addon's kernels (lib/backends/cpu/binding.ts), a
// Float32Array as every tensor's storage. It always answers; what it computes with is backendInfo().cpu.
import type { Backend } from '../backend';
import { fail } from '../../errors';
import { allocFloats } from '../../validate';
import { cpuActivations } from './activations';
import { cpuHostKernels } from './host';
import { cpuLinear } from './linear';
import { CpuLinearLoRA } from './linear-lora';
import { cpuLosses } from './losses';
import { CpuMultiLoRA } from './multi-lora';
import { cpuOps } from './ops';
import { cpuOptimizers } from './optim';
import { CpuStorage } from './storage';

export { cpuHostKernels };

export const cpuBackend: Backend = {
  device: 'cpu',
  dtypes: ['float32'],
  label: 'the CPU',
  status: () => ({ available: true, reason: '', detail: 'CPU' }),
  alloc: (where, arg, _dtype, length) => new CpuStorage(allocFloats(where, arg, length)),
  fromHost: (values, _dtype, copy) => new CpuStorage(copy ? values.slice() : values),
  adopt(where, arg, value) {
    if (value instanceof Float32Array) return new CpuStorage(value);
    if (ArrayBuffer.isView(value)) fail('ERR_DTYPE', where, arg, 'a float32 Tensor or Float32Array', value);
    return fail('ERR_ARGUMENT', where, arg, 'a Tensor or Float32Array', value);
  },
  // What it runs: its layer kinds, and the kernels of training and of ops.
  linear: cpuLinear, linearLoRA: (spec) => new CpuLinearLoRA(spec), loraDropout: true,
  multiLoRALinear: (spec) => new CpuMultiLoRA(spec),
  optimizers: cpuOptimizers, losses: cpuLosses, activations: cpuActivations, ops: cpuOps,
};
