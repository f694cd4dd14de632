// The async side: work is already enqueued on the addon's stream from the JS thread; these workers
// wait for it on a libuv worker thread and settle a Promise, so the event loop never blocks on the GPU.
#pragma once
#include <napi.h>

namespace fused_lora::cuda_addon {

// synchronizeAsync(): resolves when everything enqueued so far has run (rejects with its error).
Napi::Value SynchronizeAsync(const Napi::CallbackInfo& info);
// downloadAsync({ buffer, dtype, rows, cols, ld }): copies back to a new Float32Array off-thread.
Napi::Value DownloadAsync(const Napi::CallbackInfo& info);

}  // namespace fused_lora::cuda_addon
