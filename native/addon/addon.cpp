// The CPU addon's module: its exports, by area (entries.h), and the few that describe the process
// (backendInfo, setNumThreads). This layer translates between JS values and the plain C++ kernels
// of native/cpu; it does no arithmetic of its own.
#include <napi.h>

#include "entries.h"
#include "fused_lora/blas.h"
#include "fused_lora/isa.h"
#include "fused_lora/lowp.h"
#include "fused_lora/threads.h"
#include "napi/call.h"

namespace fused_lora::addon {
namespace {

Napi::Value BackendInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const BlasInfo& b = blas_info();
  Napi::Object blas = Napi::Object::New(env);
  blas.Set("name", b.name);
  blas.Set("path", b.path);
  blas.Set("request", b.request);
  blas.Set("reason", b.reason);
  blas.Set("threads", blas_num_threads());
  Napi::Array tried = Napi::Array::New(env, b.tried.size());
  for (size_t i = 0; i < b.tried.size(); ++i) tried.Set(static_cast<uint32_t>(i), b.tried[i]);
  blas.Set("tried", tried);
  Napi::Object out = Napi::Object::New(env);
  out.Set("blas", blas);
  out.Set("builtinKernel", isa_name(isa()));
  out.Set("builtinKernelReason", isa_choice().reason);
  out.Set("lowpKernel", lowp_kernel_name());
  out.Set("lowpKernelReason", lowp_kernel_reason());
  out.Set("lowpQuantDecode", lowp_quant_decode_name());
  out.Set("threads", num_threads());
  return out;
}

// setNumThreads(n): a number, not an options object.
Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Value v = info.Length() > 0 ? info[0] : env.Undefined();
  const double n = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : 0;
  if (!(n >= 1 && n <= 1024 && static_cast<int>(n) == n))
    throw napi::make_error(env, "ERR_ARGUMENT", "setNumThreads: expected an integer in [1, 1024] for n but received " + napi::describe(v));
  set_num_threads(static_cast<int>(n));
  return env.Undefined();
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // A kernel choice asked for by name (for a test, or to rule a kernel out) must never quietly
  // become another one: an unknown FUSED_LORA_ISA fails the load, with the accepted values.
  const IsaChoice& isa = isa_choice();
  if (!isa.error.empty()) throw napi::make_error(env, "ERR_ARGUMENT", isa.error);
  napi::add_functions(env, exports, {{"setErrorClass", napi::SetErrorClass}, {"backendInfo", BackendInfo},
                                      {"setNumThreads", SetNumThreads}});
  RegisterGemm(env, exports);
  RegisterLora(env, exports);
  RegisterMultiLora(env, exports);
  RegisterTrain(env, exports);
  return exports;
}

}  // namespace fused_lora::addon

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return fused_lora::addon::Init(env, exports); }
NODE_API_MODULE(fused_lora, InitModule)
