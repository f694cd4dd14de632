// What an addon keeps per Node environment, and the errors it throws. The main thread and each
// worker_thread load an addon into an env of their own (their own isolate): a JS class referenced
// in one must never be used from another, so the references live in the env's instance data, never
// in a static, and are released with the env. Both addons (native/addon, native/cuda_addon) use this.
#pragma once
#include <napi.h>

#include <string>

namespace fused_lora::napi {

// A refused argument or a failed kernel, thrown inside an export and turned into a LoraError at its
// boundary (call.h): the code (ERR_SHAPE, ERR_DTYPE, ...) and the whole message.
struct Failure {
  std::string code;
  std::string message;
};

struct EnvData {
  Napi::FunctionReference error_class;   // LoraError (lib/errors.ts), registered by setErrorClass
  Napi::FunctionReference buffer_class;  // the CUDA addon's DeviceBuffer
};

// This env's data, made on first use.
EnvData& env_data(Napi::Env env);

// setErrorClass(LoraError): each addon exports it, and lib/ calls it once per env and addon.
Napi::Value SetErrorClass(const Napi::CallbackInfo& info);

// A LoraError(code, message); an Error with .code where no class was registered in this env.
Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& message);
inline Napi::Error make_error(Napi::Env env, const Failure& f) { return make_error(env, f.code, f.message); }

}  // namespace fused_lora::napi
