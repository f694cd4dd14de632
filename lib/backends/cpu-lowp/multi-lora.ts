// A MultiLoRALinear over a reduced-precision frozen base on the CPU: the float32 backend's layer
// (lib/backends/cpu/multi-lora.ts, the same native calls) with W passed in its format (bf16, int8,
// nf4) and, for a bfloat16 layer, the activations as bf16 bits, widened and rounded natively around
// the kernels; the adapters, s, ds and the gradients stay float32.
import type { MultiLoRAKernels, MultiLoRASpec } from '../backend';
import { CpuMultiLoRA } from '../cpu/multi-lora';
import { act, actKind, bias32, weightArgs } from './operands';

export function lowpMultiLoRA(spec: MultiLoRASpec): MultiLoRAKernels {
  const kind = actKind(spec.dtype);
  return new CpuMultiLoRA(spec, { weight: (W) => ({ ...weightArgs(W), act: kind }), act, bias: bias32 });
}
