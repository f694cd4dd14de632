// The CUDA addon's module: its exports, by area (entries.h), the DeviceBuffer class, and deviceInfo.
// Translation only: the arithmetic is native/cuda's. download() and synchronize() wait on the JS
// thread, downloadAsync() and synchronizeAsync() off it (workers.cpp).
#include <napi.h>

#include "entries.h"
#include "handles.h"
#include "napi/call.h"

namespace fused_lora::cuda_addon {
namespace {

Napi::Value DeviceInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const fc::DeviceInfo& d = fc::device_info();
  Napi::Object o = Napi::Object::New(env);
  o.Set("available", d.available);
  o.Set("reason", d.reason);
  o.Set("deviceCount", d.device_count);
  o.Set("name", d.name);
  o.Set("computeCapability", d.major ? std::to_string(d.major) + "." + std::to_string(d.minor) : std::string());
  o.Set("memoryBytes", static_cast<double>(d.memory_bytes));
  o.Set("multiprocessors", d.multiprocessors);
  o.Set("driverVersion", d.driver_version);
  o.Set("runtimeVersion", d.runtime_version);
  return o;
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("DeviceBuffer", DeviceBuffer::Init(env));
  napi::add_functions(env, exports, {{"setErrorClass", napi::SetErrorClass}, {"deviceInfo", DeviceInfo}});
  RegisterMemory(env, exports);
  RegisterLora(env, exports);
  RegisterMultiLora(env, exports);
  RegisterTrain(env, exports);
  return exports;
}

}  // namespace fused_lora::cuda_addon

static Napi::Object InitCudaAddon(Napi::Env env, Napi::Object exports) {
  return fused_lora::cuda_addon::Init(env, exports);
}
NODE_API_MODULE(fused_lora_cuda, InitCudaAddon)
