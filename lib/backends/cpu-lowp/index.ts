// The CPU backend of a reduced-precision frozen base: bfloat16 tensors (Bf16Storage) and layers, and
// the kernels of a quantized frozen Linear (int8, nf4: QuantStorage) whatever its activation dtype.
// It is the same addon as the float32 CPU backend's: the same status, the same optimizer kernels
// (A, B, their gradients and the optimizer state are float32 masters on the float32 CPU placement).
// Losses and activations of bf16 tensors widen, run the float32 kernels and round (widened.ts).
import type { Backend } from '../backend';
import { fail } from '../../errors';
import { cpuOptimizers } from '../cpu/optim';
import { LowpLinearLoRA } from './linear-lora';
import { lowpLinear } from './linear';
import { lowpMultiLoRA } from './multi-lora';
import { Bf16Storage } from './storage';
import { widenedActivations, widenedLosses } from './widened';

export { Bf16Storage, QuantStorage } from './storage';

export const cpuBf16Backend: Backend = {
  device: 'cpu',
  dtypes: ['bfloat16'],
  label: 'the CPU',
  status: () => ({ available: true, reason: '', detail: 'CPU' }),
  alloc: (_where, _arg, _dtype, length) => new Bf16Storage(new Uint16Array(length)),
  fromHost: (values) => Bf16Storage.fromFloats(values),
  adopt(where, arg, value) {
    if (ArrayBuffer.isView(value)) fail('ERR_DTYPE', where, arg, "a bfloat16 Tensor (tensor(values, shape, { dtype: 'bfloat16' }))", value);
    return fail('ERR_ARGUMENT', where, arg, 'a bfloat16 Tensor', value);
  },
  linear: lowpLinear, linearLoRA: (spec) => new LowpLinearLoRA(spec), loraDropout: true,
  multiLoRALinear: lowpMultiLoRA,
  optimizers: cpuOptimizers, losses: widenedLosses, activations: widenedActivations, ops: null,
};

/**
 * The layer kinds of a quantized frozen Linear (int8, nf4) on the CPU, for either activation dtype:
 * the Linear and the LinearLoRA or MultiLoRALinear over it take their kernels from here, not from their placement's
 * backend, since the weight's format (not the dtype) decides which kernels can read it.
 */
export const cpuQuantizedKernels: Pick<Backend, 'linear' | 'linearLoRA' | 'multiLoRALinear' | 'loraDropout' | 'label'> = {
  linear: lowpLinear, linearLoRA: (spec) => new LowpLinearLoRA(spec), multiLoRALinear: lowpMultiLoRA, loraDropout: true, label: 'the CPU',
};
