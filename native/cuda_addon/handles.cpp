#include "handles.h"

#include <cmath>

namespace fused_lora::cuda_addon {

napi::Failure failure(fc::Status st, const std::string& what, const std::string& detail) {
  const char* code = st == fc::Status::NoDevice ? "ERR_DEVICE" : st == fc::Status::Argument ? "ERR_ARGUMENT" : "ERR_BACKEND";
  return napi::Failure{code, what + ": " + detail};
}

void check(fc::Status st, const std::string& what) {
  if (st != fc::Status::Ok) throw failure(st, what);
}

fc::Stream default_stream(Napi::Env env) {
  static fc::Stream s = nullptr;
  static bool made = false;
  if (!made) {
    fc::Status st = fc::stream_create(&s);
    if (st != fc::Status::Ok) throw napi::make_error(env, failure(st, "cuda stream"));
    made = true;
  }
  return s;
}

// ---- DeviceBuffer ----------------------------------------------------------------------------------

Napi::Function DeviceBuffer::Init(Napi::Env env) {
  Napi::Function f = DefineClass(env, "DeviceBuffer",
                                 {InstanceMethod("dispose", &DeviceBuffer::Dispose),
                                  InstanceAccessor("bytes", &DeviceBuffer::GetBytes, nullptr),
                                  InstanceAccessor("disposed", &DeviceBuffer::GetDisposed, nullptr)});
  napi::env_data(env).buffer_class = Napi::Persistent(f);
  return f;
}

// alloc(bytes): the only way to make one (the constructor takes a bytes count too).
Napi::Value DeviceBuffer::Alloc(const Napi::CallbackInfo& info) {
  return napi::env_data(info.Env()).buffer_class.New({info.Length() > 0 ? info[0] : info.Env().Undefined()});
}

DeviceBuffer::DeviceBuffer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeviceBuffer>(info) {
  Napi::Env env = info.Env();
  Napi::Value v = info.Length() > 0 ? info[0] : env.Undefined();
  const double n = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (!(n >= 1 && n <= static_cast<double>(napi::kMaxElems) && std::floor(n) == n))
    throw napi::make_error(env, "ERR_ARGUMENT", "alloc: expected an integer in [1, 2^53] for bytes but received " + napi::describe(v));
  void* p = nullptr;
  fc::Status st = fc::device_alloc(&p, static_cast<size_t>(n), default_stream(env));
  if (st != fc::Status::Ok) throw napi::make_error(env, failure(st, "alloc"));
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

// ---- DeviceFields ------------------------------------------------------------------------------------

fc::DType DeviceFields::dtype(const char* key) const {
  static constexpr fc::DType kTypes[] = {fc::DType::F32, fc::DType::BF16, fc::DType::F16};
  return kTypes[choice(key, {"float32", "bfloat16", "float16"}, -1, "ERR_DTYPE")];
}

fc::Math DeviceFields::math() const {
  return choice("math", {"tf32", "exact"}, 0) == 0 ? fc::Math::Default : fc::Math::ExactF32;
}

DeviceBuffer* DeviceFields::buffer(const char* key, size_t min_bytes, bool optional) const {
  Napi::Value v = get(key);
  if (optional && !has(key)) return nullptr;
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(napi::env_data(obj.Env()).buffer_class.Value()))
    napi::fail("ERR_ARGUMENT", what, key, "a DeviceBuffer", napi::describe(v));
  DeviceBuffer* b = DeviceBuffer::Unwrap(v.As<Napi::Object>());
  if (!b->ptr()) napi::fail("ERR_DISPOSED", what, key, "a live DeviceBuffer", "a disposed one");
  if (b->bytes() < min_bytes)
    napi::fail("ERR_SHAPE", what, key, "a DeviceBuffer of at least " + std::to_string(min_bytes) + " bytes",
               "one of " + std::to_string(b->bytes()) + " bytes");
  return b;
}

void* DeviceFields::matrix(const char* key, int64_t rows, int64_t cols, int64_t ld, fc::DType t, bool optional) const {
  DeviceBuffer* b = buffer(key, span(rows, cols, ld, t), optional);
  return b != nullptr ? b->ptr() : nullptr;
}

float* DeviceFields::f32(const char* key, int64_t n) const {
  return static_cast<float*>(matrix(key, 1, n, n, fc::DType::F32));
}

int64_t DeviceFields::ld(const char* key, int64_t width, const char* width_name) const {
  const int64_t v = count_or(key, width);
  if (v < width)
    napi::fail("ERR_SHAPE", what, key, "an integer >= " + std::string(width_name) + " (" + std::to_string(width) + ")",
               napi::describe(get(key)));
  return v;
}

Region DeviceFields::region(const char* key, fc::DType t) const {
  const int64_t rows = count("rows", 1), cols = count("cols", 1), l = ld("ld", cols, "cols");
  return Region{buffer(key, span(rows, cols, l, t)), rows, cols, l};
}

size_t DeviceFields::span(int64_t rows, int64_t cols, int64_t ld, fc::DType t) const {
  if (rows <= 0 || cols <= 0) return 0;
  const int64_t elems = napi::product(rows - 1, ld, what) + cols;
  return static_cast<size_t>(elems) * fc::dtype_size(t);
}

}  // namespace fused_lora::cuda_addon
