// fused-lora: LoRA layers for Node.js with fused native kernels. See README.md.
import * as ops from './ops';

export { LoraError } from './errors';
export type { LoraErrorCode } from './errors';
export { Tensor, tensor, zeros } from './tensor';
export type { DType, Device, TensorOptions } from './tensor';
export type { TensorLike } from './operands';
export { Linear } from './linear';
export type { LinearOptions, OutOptions, Quantize } from './linear';
export { LoRA } from './lora';
export type { LoRAOptions } from './lora';
export { LinearLoRA } from './linear-lora';
export type { LinearLoRAOptions, MergeOptions, BackwardOptions, AsyncOptions, ForwardAsyncOptions, BackwardAsyncOptions } from './linear-lora';
export { backendInfo, setNumThreads } from './backend-info';
export type { BackendInfo } from './backend-info';
export { ops };
export { SGD, AdamW, clipGradNorm } from './optim';
export type { SGDOptions, AdamWOptions, SGDHyper, AdamWHyper, SGDState, AdamWState, ClipGradNormOptions } from './optim';
export { mseLoss, crossEntropyLoss } from './losses';
export type { LossResult, Labels } from './losses';
export { relu, gelu, ReLU, GELU } from './activations';
export type { ActivationBackwardOptions } from './activations';
export { readSafetensors, writeSafetensors, loadSafetensors } from './io/safetensors';
export type { SafetensorsContents, SafetensorsTensor, ReadSafetensorsOptions, LoadSafetensorsOptions, WriteSafetensorsOptions, ReadableDType, WritableDType } from './io/safetensors';
export { saveAdapter, loadAdapter } from './io/adapter';
export type { SaveAdapterOptions, LoadAdapterOptions, LoadAdapterResult, AdapterConfig, StatefulOptimizer } from './io/adapter';
export { Sequential, applyLoRA } from './sequential';
export type { Module, ApplyLoRAOptions } from './sequential';
