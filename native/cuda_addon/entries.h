// The CUDA addon's exports, by area; addon.cpp adds each area's to the module. Every op reads and
// checks its options (DeviceFields, handles.h: shapes against buffer sizes, so no kernel is handed
// a region past a buffer's end), enqueues its kernels on the addon's stream and returns at once.
#pragma once
#include <napi.h>

namespace fused_lora::cuda_addon {

// alloc, upload, download, downloadAsync, fill, cast, memoryStats, emptyCache, synchronize,
// synchronizeAsync.
void RegisterMemory(Napi::Env env, Napi::Object exports);
// gemm, rankPad, wExtLayout, refreshWExt, loraForwardFused, loraBackwardFused, loraForwardUnfused,
// loraBackwardUnfused.
void RegisterLora(Napi::Env env, Napi::Object exports);
// multiLoraRefresh, multiLoraForwardFused, multiLoraBackwardFused.
void RegisterMultiLora(Napi::Env env, Napi::Object exports);
// adamw, mseLoss, crossEntropyLoss.
void RegisterTrain(Napi::Env env, Napi::Object exports);

}  // namespace fused_lora::cuda_addon
