#include "handles.h"

#include <cmath>

namespace fused_lora::cuda_addon {
namespace {

// The JS classes this addon uses, per Node environment: the main thread and each worker_thread load
// the addon into their own env, and a reference made in one must never be used from another (a
// process-wide static did exactly that in the CPU addon and crashed once a worker had exited).
struct EnvData {
  Napi::FunctionReference error_class;
  Napi::FunctionReference buffer_ctor;
};

EnvData& env_data(Napi::Env env) {
  EnvData* d = env.GetInstanceData<EnvData>();
  if (d == nullptr) {
    d = new EnvData();
    env.SetInstanceData(d);  // deleted, and its references released, when this env is torn down
  }
  return *d;
}

Napi::FunctionReference& error_class(Napi::Env env) { return env_data(env).error_class; }
Napi::FunctionReference& buffer_ctor(Napi::Env env) { return env_data(env).buffer_ctor; }

}  // namespace

void set_error_class(const Napi::Function& ctor) { error_class(ctor.Env()) = Napi::Persistent(ctor); }

Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::FunctionReference& cls = error_class(env);
  if (!cls.IsEmpty()) {
    Napi::Object e = cls.New({Napi::String::New(env, code), Napi::String::New(env, message)});
    return Napi::Error(env, e);
  }
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

void throw_status(Napi::Env env, fc::Status st, const char* op) {
  const char* code = st == fc::Status::NoDevice ? "ERR_DEVICE" : st == fc::Status::Argument ? "ERR_ARGUMENT" : "ERR_BACKEND";
  throw make_error(env, code, std::string(op) + ": " + fc::last_error());
}

fc::Stream default_stream(Napi::Env env) {
  static fc::Stream s = nullptr;
  static bool made = false;
  if (!made) {
    fc::Status st = fc::stream_create(&s);
    if (st != fc::Status::Ok) throw_status(env, st, "cuda stream");
    made = true;
  }
  return s;
}

size_t span_bytes(int64_t rows, int64_t cols, int64_t ld, fc::DType t) {
  if (rows <= 0 || cols <= 0) return 0;
  return static_cast<size_t>((rows - 1) * ld + cols) * fc::dtype_size(t);
}

// ---- DeviceBuffer ----------------------------------------------------------------------------------

Napi::Function DeviceBuffer::Init(Napi::Env env) {
  Napi::Function f = DefineClass(env, "DeviceBuffer",
                                 {InstanceMethod("dispose", &DeviceBuffer::Dispose),
                                  InstanceAccessor("bytes", &DeviceBuffer::GetBytes, nullptr),
                                  InstanceAccessor("disposed", &DeviceBuffer::GetDisposed, nullptr)});
  buffer_ctor(env) = Napi::Persistent(f);
  return f;
}

// alloc(bytes): the only way to make one (the constructor takes a bytes count too).
Napi::Value DeviceBuffer::Alloc(const Napi::CallbackInfo& info) {
  return buffer_ctor(info.Env()).New({info.Length() > 0 ? info[0] : info.Env().Undefined()});
}

DeviceBuffer::DeviceBuffer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeviceBuffer>(info) {
  Napi::Env env = info.Env();
  double n = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
  if (!(n >= 1 && n <= 9007199254740991.0 && std::floor(n) == n))
    throw make_error(env, "ERR_ARGUMENT", "alloc: expected a positive integer for bytes");
  void* p = nullptr;
  fc::Status st = fc::device_alloc(&p, static_cast<size_t>(n), default_stream(env));
  if (st != fc::Status::Ok) throw_status(env, st, "alloc");
  ptr_ = p;
  bytes_ = static_cast<size_t>(n);
  Napi::MemoryManagement::AdjustExternalMemory(env, static_cast<int64_t>(bytes_));
  reported_ = true;
}

void DeviceBuffer::release(Napi::Env env) {
  if (!ptr_) return;
  fc::device_free(ptr_, default_stream(env));
  ptr_ = nullptr;
  if (reported_) Napi::MemoryManagement::AdjustExternalMemory(env, -static_cast<int64_t>(bytes_));
  reported_ = false;
}

DeviceBuffer::~DeviceBuffer() {
  // The finalizer: the safety net for buffers never disposed. No JS may run here, and the env's
  // external-memory count is adjusted only when the env is still usable.
  if (ptr_) {
    fc::device_free(ptr_, nullptr);
    if (reported_) Napi::MemoryManagement::AdjustExternalMemory(Env(), -static_cast<int64_t>(bytes_));
    ptr_ = nullptr;
  }
}

Napi::Value DeviceBuffer::Dispose(const Napi::CallbackInfo& info) {
  release(info.Env());
  return info.Env().Undefined();
}
Napi::Value DeviceBuffer::GetBytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(bytes_));
}
Napi::Value DeviceBuffer::GetDisposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), ptr_ == nullptr);
}

// ---- Args --------------------------------------------------------------------------------------------

int64_t Args::int_or(const char* name, int64_t fallback) const {
  Napi::Value v = obj.Get(name);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (!(d >= 0 && d <= 9007199254740991.0 && std::floor(d) == d))
    throw make_error(env, "ERR_ARGUMENT", std::string(op) + ": expected a non-negative integer for " + name);
  return static_cast<int64_t>(d);
}

int64_t Args::dim(const char* name) const {
  int64_t v = int_or(name, -1);
  if (v < 1) throw make_error(env, "ERR_SHAPE", std::string(op) + ": expected an integer >= 1 for " + name);
  return v;
}

double Args::num(const char* name, double fallback) const {
  Napi::Value v = obj.Get(name);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  if (!v.IsNumber()) throw make_error(env, "ERR_ARGUMENT", std::string(op) + ": expected a number for " + name);
  return v.As<Napi::Number>().DoubleValue();
}

bool Args::flag(const char* name, bool fallback) const {
  Napi::Value v = obj.Get(name);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  if (!v.IsBoolean()) throw make_error(env, "ERR_ARGUMENT", std::string(op) + ": expected a boolean for " + name);
  return v.As<Napi::Boolean>().Value();
}

fc::DType Args::dtype(const char* name) const {
  Napi::Value v = obj.Get(name);
  std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
  if (s == "float32") return fc::DType::F32;
  if (s == "bfloat16") return fc::DType::BF16;
  if (s == "float16") return fc::DType::F16;
  throw make_error(env, "ERR_DTYPE", std::string(op) + ": expected 'float32', 'bfloat16' or 'float16' for " + name);
}

fc::Math Args::math() const {
  Napi::Value v = obj.Get("math");
  if (v.IsUndefined() || v.IsNull()) return fc::Math::Default;
  std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
  if (s == "tf32") return fc::Math::Default;
  if (s == "exact") return fc::Math::ExactF32;
  throw make_error(env, "ERR_ARGUMENT", std::string(op) + ": expected 'tf32' or 'exact' for math");
}

DeviceBuffer* Args::buffer(const char* name, size_t min_bytes, bool optional) const {
  Napi::Value v = obj.Get(name);
  if ((v.IsUndefined() || v.IsNull()) && optional) return nullptr;
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(buffer_ctor(env).Value()))
    throw make_error(env, "ERR_ARGUMENT", std::string(op) + ": expected a DeviceBuffer for " + name);
  DeviceBuffer* b = DeviceBuffer::Unwrap(v.As<Napi::Object>());
  if (!b->ptr()) throw make_error(env, "ERR_DISPOSED", std::string(op) + ": " + name + " was disposed");
  if (b->bytes() < min_bytes)
    throw make_error(env, "ERR_SHAPE", std::string(op) + ": expected at least " + std::to_string(min_bytes) +
                                           " bytes in " + name + " but it holds " + std::to_string(b->bytes()));
  return b;
}

}  // namespace fused_lora::cuda_addon
