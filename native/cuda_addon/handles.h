// Device buffers as JS objects, the options reader that takes them, and kernel failures as errors.
// The addon's one stream lives here too: every op is enqueued on it from the JS thread (launches
// return at once), and waiting for it happens off the JS thread (workers.cpp).
#pragma once
#include <napi.h>

#include <string>

#include "fused_lora/cuda.h"
#include "napi/env.h"
#include "napi/fields.h"

namespace fused_lora::cuda_addon {

namespace fc = fused_lora::cuda;

// The kernel layer's failure as a Failure (napi/env.h): NoDevice → ERR_DEVICE, Argument →
// ERR_ARGUMENT, else ERR_BACKEND, with `detail` (by default last_error(), this thread's).
napi::Failure failure(fc::Status st, const std::string& what, const std::string& detail = fc::last_error());
// Throws failure(st, what) unless st is Ok.
void check(fc::Status st, const std::string& what);

// The addon's stream, created on first use (a LoraError, ERR_DEVICE, without a device).
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

// A (rows, cols) region of a buffer with leading dimension ld.
struct Region {
  DeviceBuffer* buf;
  int64_t rows, cols, ld;
};

// The options reader of this addon: napi::Fields, plus dtypes, the GEMM's math and DeviceBuffers.
struct DeviceFields : napi::Fields {
  fc::DType dtype(const char* key) const;  // 'float32' | 'bfloat16' | 'float16' (ERR_DTYPE)
  fc::Math math() const;                   // the field `math`: 'tf32' (default) | 'exact'
  // A live DeviceBuffer of at least `min_bytes`; null when optional and absent.
  DeviceBuffer* buffer(const char* key, size_t min_bytes, bool optional = false) const;
  // The device pointer of a buffer holding a (rows, cols) matrix of dtype t with leading dimension
  // ld; null when optional and absent.
  void* matrix(const char* key, int64_t rows, int64_t cols, int64_t ld, fc::DType t, bool optional = false) const;
  // The device pointer of a buffer of at least n fp32 values.
  float* f32(const char* key, int64_t n) const;
  // A leading dimension: `width` when absent, refused below it.
  int64_t ld(const char* key, int64_t width, const char* width_name) const;
  // { rows, cols, ld } and the buffer `key` holding them in dtype t.
  Region region(const char* key, fc::DType t) const;
  // Bytes a (rows, cols) region with leading dimension ld of dtype t spans (refused past 2^53 elements).
  size_t span(int64_t rows, int64_t cols, int64_t ld, fc::DType t) const;
};

}  // namespace fused_lora::cuda_addon
