// The CPU addon's exports, by area; addon.cpp adds each area's to the module.
#pragma once
#include <napi.h>

namespace fused_lora::addon {

// linearForward, linearBackward, loraForward, loraBackward (each with its Async twin), merge.
void RegisterLora(Napi::Env env, Napi::Object exports);
// multiLoraGroup, multiLoraForward, multiLoraBackward (each with its Async twin).
void RegisterMultiLora(Napi::Env env, Napi::Object exports);
// gemm, gemmPlan, builtinKernels.
void RegisterGemm(Napi::Env env, Napi::Object exports);
// adamwStep, sgdStep, clipGradNorm, mseLoss, crossEntropyLoss, reluForward, reluBackward,
// geluForward, geluBackward.
void RegisterTrain(Napi::Env env, Napi::Object exports);

}  // namespace fused_lora::addon
