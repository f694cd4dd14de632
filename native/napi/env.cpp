#include "napi/env.h"

namespace fused_lora::napi {

EnvData& env_data(Napi::Env env) {
  EnvData* d = env.GetInstanceData<EnvData>();
  if (d == nullptr) {
    d = new EnvData();
    env.SetInstanceData(d);  // deleted, and its references released, when this env is torn down
  }
  return *d;
}

Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsFunction())
    throw Napi::TypeError::New(info.Env(), "setErrorClass: expected a constructor");
  env_data(info.Env()).error_class = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::FunctionReference& cls = env_data(env).error_class;
  if (!cls.IsEmpty()) {
    Napi::Object e = cls.New({Napi::String::New(env, code), Napi::String::New(env, message)});
    return Napi::Error(env, e);
  }
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

}  // namespace fused_lora::napi
