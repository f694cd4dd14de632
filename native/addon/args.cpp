#include "args.h"

#include <cmath>

namespace fused_lora::addon {
namespace {

constexpr int64_t kMaxDim = 2147483647;        // int32: BLAS's index type
constexpr int64_t kMaxElems = 9007199254740992;  // 2^53

// The LoraError class is per environment (the main thread and each worker_thread have their own
// isolate and their own class): it lives in the env's instance data, never in a static, so a
// reference made in one isolate is never used from another, and it is released with its env.
struct EnvData {
  Napi::FunctionReference error_class;
};

EnvData* env_data(Napi::Env env) { return env.GetInstanceData<EnvData>(); }

std::string type_name(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsTypedArray()) {
    switch (v.As<Napi::TypedArray>().TypedArrayType()) {
      case napi_float32_array: return "Float32Array";
      case napi_float64_array: return "Float64Array";
      case napi_uint8_array: return "Uint8Array";
      default: return "another TypedArray";
    }
  }
  if (v.IsArray()) return "Array";
  if (v.IsNumber()) return "number " + std::to_string(v.As<Napi::Number>().DoubleValue());
  if (v.IsString()) return "string";
  if (v.IsBoolean()) return "boolean";
  return "object";
}

}  // namespace

void set_error_class(const Napi::Function& ctor) {
  Napi::Env env = ctor.Env();
  EnvData* data = env_data(env);
  if (data == nullptr) {
    data = new EnvData();
    env.SetInstanceData(data);  // deleted (and the reference released) when this env is torn down
  }
  data->error_class = Napi::Persistent(ctor);
}

Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& message) {
  EnvData* data = env_data(env);
  if (data != nullptr && !data->error_class.IsEmpty()) {
    Napi::Object e = data->error_class.New({Napi::String::New(env, code), Napi::String::New(env, message)});
    return Napi::Error(env, e);
  }
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

bool Fields::has(const char* key) const {
  Napi::Value v = obj.Get(key);
  return !v.IsUndefined() && !v.IsNull();
}

int64_t Fields::dim(const char* key) const {
  Napi::Value v = obj.Get(key);
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  if (!(d >= 0 && d <= kMaxDim && std::floor(d) == d))
    throw ArgError{"ERR_SHAPE", what + ": expected an integer in [0, 2^31 - 1] for " + key + " but received " + type_name(v)};
  return static_cast<int64_t>(d);
}

double Fields::number(const char* key) const {
  Napi::Value v = obj.Get(key);
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  if (!std::isfinite(d))
    throw ArgError{"ERR_ARGUMENT", what + ": expected a finite number for " + key + " but received " + type_name(v)};
  return d;
}

bool Fields::boolean(const char* key, bool fallback) const {
  Napi::Value v = obj.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsBoolean())
    throw ArgError{"ERR_ARGUMENT", what + ": expected a boolean for " + key + " but received " + type_name(v)};
  return v.As<Napi::Boolean>().Value();
}

uint64_t Fields::seed(const char* key) const {
  Napi::Value v = obj.Get(key);
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  if (!(d >= 0 && d <= static_cast<double>(kMaxElems) && std::floor(d) == d))
    throw ArgError{"ERR_ARGUMENT", what + ": expected an integer in [0, 2^53] for " + key + " but received " + type_name(v)};
  return static_cast<uint64_t>(d);
}

std::string Fields::string(const char* key, const std::string& fallback) const {
  Napi::Value v = obj.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsString())
    throw ArgError{"ERR_ARGUMENT", what + ": expected a string for " + key + " but received " + type_name(v)};
  return v.As<Napi::String>().Utf8Value();
}

float* Fields::floats(const char* key, int64_t need, bool optional) const {
  Napi::Value v = obj.Get(key);
  if (optional && (v.IsUndefined() || v.IsNull())) return nullptr;
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw ArgError{"ERR_DTYPE", what + ": expected a Float32Array for " + key + " but received " + type_name(v)};
  Napi::Float32Array a = v.As<Napi::Float32Array>();
  if (static_cast<int64_t>(a.ElementLength()) < need)
    throw ArgError{"ERR_SHAPE", what + ": expected at least " + std::to_string(need) + " elements in " + key +
                                    " but received " + std::to_string(a.ElementLength())};
  if (keep != nullptr) keep->push_back(v);
  return a.Data();
}

uint8_t* Fields::bytes(const char* key, int64_t need, bool optional) const {
  Napi::Value v = obj.Get(key);
  if (optional && (v.IsUndefined() || v.IsNull())) return nullptr;
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    throw ArgError{"ERR_DTYPE", what + ": expected a Uint8Array for " + key + " but received " + type_name(v)};
  Napi::Uint8Array a = v.As<Napi::Uint8Array>();
  if (static_cast<int64_t>(a.ElementLength()) < need)
    throw ArgError{"ERR_SHAPE", what + ": expected at least " + std::to_string(need) + " elements in " + key +
                                    " but received " + std::to_string(a.ElementLength())};
  if (keep != nullptr) keep->push_back(v);
  return a.Data();
}

int64_t product(int64_t a, int64_t b, const std::string& what) {
  if (a != 0 && b > kMaxElems / a)
    throw ArgError{"ERR_SHAPE", what + ": shape product " + std::to_string(a) + " x " + std::to_string(b) +
                                    " exceeds 2^53 elements"};
  return a * b;
}

}  // namespace fused_lora::addon
