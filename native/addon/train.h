// The training exports (optimizer steps, gradient clipping, losses, activations) at the N-API
// boundary. Kernels live in native/cpu (fused_lora/train.h); this layer only reads and checks.
#pragma once
#include <napi.h>

namespace fused_lora::addon {

// Adds adamwStep, sgdStep, clipGradNorm, mseLoss, crossEntropyLoss, reluForward, reluBackward,
// geluForward and geluBackward to the module's exports.
void RegisterTrain(Napi::Env env, Napi::Object exports);

}  // namespace fused_lora::addon
