// Exports that describe the CPU kernels (kernels.cpp).
#pragma once
#include <napi.h>

namespace fused_lora::addon {

void RegisterKernels(Napi::Env env, Napi::Object exports);

}  // namespace fused_lora::addon
