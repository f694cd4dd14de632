// LoRA forward/backward at the N-API boundary: one parser per op (shared by the sync and the async
// entry points, so both check the same things) and an AsyncWorker that runs a kernel off the main
// thread while holding a reference to the JS object that owns every buffer it touches.
#pragma once
#include <napi.h>

namespace fused_lora::addon {

Napi::Value LinearForward(const Napi::CallbackInfo& info);        // (args) -> undefined
Napi::Value LinearBackward(const Napi::CallbackInfo& info);       // (args) -> undefined
Napi::Value LinearForwardAsync(const Napi::CallbackInfo& info);   // (args) -> Promise<void>
Napi::Value LinearBackwardAsync(const Napi::CallbackInfo& info);  // (args) -> Promise<void>
Napi::Value LoraForward(const Napi::CallbackInfo& info);        // (args) -> undefined
Napi::Value LoraBackward(const Napi::CallbackInfo& info);       // (args) -> undefined
Napi::Value LoraForwardAsync(const Napi::CallbackInfo& info);   // (args) -> Promise<void>
Napi::Value LoraBackwardAsync(const Napi::CallbackInfo& info);  // (args) -> Promise<void>

}  // namespace fused_lora::addon
