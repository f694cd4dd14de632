// Device buffers as JS objects, arguments read from JS, and errors with stable codes. The addon's
// one default stream lives here too: every op is enqueued on it from the JS thread (launches return
// at once), and waiting for it happens off the JS thread (workers.cpp).
#pragma once
#include <napi.h>

#include <string>

#include "fused_lora/cuda.h"

namespace fused_lora::cuda_addon {

namespace fc = fused_lora::cuda;

void set_error_class(const Napi::Function& ctor);
Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& message);
// Throws the kernel layer's failure as a JS error: NoDevice → ERR_DEVICE, Argument → ERR_ARGUMENT,
// else ERR_BACKEND, with last_error()'s text.
void throw_status(Napi::Env env, fc::Status st, const char* op);

// The addon's stream, created on first use (throws ERR_DEVICE without a device).
fc::Stream default_stream(Napi::Env env);

// A block of device memory owned by JS. dispose() gives it back to the caching allocator at once;
// the finalizer does the same if the object is collected first. Bytes are reported to V8 with
// AdjustExternalMemory, so the GC sees device memory as pressure.
class DeviceBuffer : public Napi::ObjectWrap<DeviceBuffer> {
 public:
  static Napi::Function Init(Napi::Env env);
  static Napi::Value Alloc(const Napi::CallbackInfo& info);
  explicit DeviceBuffer(const Napi::CallbackInfo& info);
  ~DeviceBuffer() override;
  void* ptr() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value GetBytes(const Napi::CallbackInfo& info);
  Napi::Value GetDisposed(const Napi::CallbackInfo& info);
  void release(Napi::Env env);
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  bool reported_ = false;
};

// Argument readers for an options object: each throws ERR_ARGUMENT naming the field.
struct Args {
  Napi::Env env;
  Napi::Object obj;
  const char* op;
  int64_t dim(const char* name) const;                     // integer >= 1
  int64_t int_or(const char* name, int64_t fallback) const;  // integer >= 0, default when absent
  double num(const char* name, double fallback) const;
  bool flag(const char* name, bool fallback) const;
  fc::DType dtype(const char* name) const;                 // 'float32' | 'bfloat16' | 'float16'
  fc::Math math() const;                                   // 'tf32' (default) | 'exact'
  // A DeviceBuffer that must hold at least `min_bytes`; null when optional and absent.
  DeviceBuffer* buffer(const char* name, size_t min_bytes, bool optional = false) const;
};

// Bytes a (rows, cols) region with leading dimension ld of a dtype spans.
size_t span_bytes(int64_t rows, int64_t cols, int64_t ld, fc::DType t);

}  // namespace fused_lora::cuda_addon
