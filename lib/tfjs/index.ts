// fused-lora/tfjs: the fused LoRA kernels inside TensorFlow.js. loraLinear is a tfjs op (a kernel
// and a gradient registered for the cpu and wasm backends, tfjs's own ops elsewhere); LoRADense is a
// tf.layers.Layer built on it; applyLoRA wraps a model's Dense layers; saveAdapter and loadAdapter
// (fused-lora's own) write and read LoRADense adapters in PEFT's format. See README.md.
import { registerGradient } from './gradient';
import { registerKernels } from './kernels';

registerKernels();
registerGradient();

export { loraLinear } from './op';
export type { LoraLinearOptions } from './op';
export { LoRADense } from './lora-dense';
export type { LoRADenseArgs } from './lora-dense';
export { applyLoRA } from './apply-lora';
export type { ApplyLoRAOptions, AppliedLoRA } from './apply-lora';
export { FORWARD_KERNEL, GRADIENT_KERNEL } from './kernels';
export { saveAdapter, loadAdapter } from '../io/adapter';
export type { SaveAdapterOptions, LoadAdapterOptions, LoadAdapterResult } from '../io/adapter';
export { LoraError } from '../errors';
