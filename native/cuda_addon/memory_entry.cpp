// Device memory: buffers, copies between host and device, fills, casts, the allocator's state and
// the stream's waits.
#include <napi.h>

#include "entries.h"
#include "handles.h"
#include "napi/call.h"
#include "workers.h"

namespace fused_lora::cuda_addon {
namespace {

using fc::DType;

Napi::Value MemoryStats(const Napi::CallbackInfo& info) {
  fc::AllocatorStats s = fc::allocator_stats();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("allocatedBytes", static_cast<double>(s.allocated_bytes));
  o.Set("cachedBytes", static_cast<double>(s.cached_bytes));
  o.Set("reservedBytes", static_cast<double>(s.reserved_bytes));
  return o;
}

Napi::Value EmptyCache(const Napi::CallbackInfo& info) {
  const fc::Status st = fc::allocator_empty_cache();
  if (st != fc::Status::Ok) throw napi::make_error(info.Env(), failure(st, "emptyCache"));
  return info.Env().Undefined();
}

// upload({ buffer, dtype, data: Float32Array, rows, cols, ld }) — or data: Int32Array with dtype
// 'int32' for labels (raw copy).
Napi::Value Upload(const Napi::CallbackInfo& info) {
  return napi::call<DeviceFields>(info, "upload", [](Napi::Env env, const DeviceFields& a) -> Napi::Value {
    const Napi::Value dt = a.get("dtype");
    if (dt.IsString() && dt.As<Napi::String>().Utf8Value() == "int32") {
      const int32_t* data = a.ints("data", 0);
      const size_t bytes = a.get("data").As<Napi::Int32Array>().ElementLength() * 4;
      check(fc::upload_bytes(a.buffer("buffer", bytes)->ptr(), data, bytes, default_stream(env)), a.what);
      return env.Undefined();
    }
    const DType t = a.dtype("dtype");
    const float* data = a.floats("data", 0);
    const Region r = a.region("buffer", t);
    const int64_t n = static_cast<int64_t>(a.get("data").As<Napi::Float32Array>().ElementLength());
    if (n != r.rows * r.cols)
      napi::fail("ERR_SHAPE", a.what, "data", "a Float32Array of rows·cols = " + std::to_string(r.rows * r.cols) + " elements",
                 napi::describe(a.get("data")));
    check(fc::upload_f32(r.buf->ptr(), t, r.ld, data, r.cols, r.rows, r.cols, default_stream(env)), a.what);
    return env.Undefined();
  });
}

// download({ buffer, dtype, rows, cols, ld }) → Float32Array (rows·cols), waiting on the JS thread.
Napi::Value Download(const Napi::CallbackInfo& info) {
  return napi::call<DeviceFields>(info, "download", [](Napi::Env env, const DeviceFields& a) -> Napi::Value {
    const DType t = a.dtype("dtype");
    const Region r = a.region("buffer", t);
    Napi::Float32Array out = Napi::Float32Array::New(env, static_cast<size_t>(r.rows * r.cols));
    check(fc::download_f32(out.Data(), r.cols, r.buf->ptr(), t, r.ld, r.rows, r.cols, default_stream(env)), a.what);
    return out;
  });
}

// fill({ buffer, dtype, rows, cols, ld, value })
Napi::Value Fill(const Napi::CallbackInfo& info) {
  return napi::call<DeviceFields>(info, "fill", [](Napi::Env env, const DeviceFields& a) -> Napi::Value {
    const DType t = a.dtype("dtype");
    const Region r = a.region("buffer", t);
    const float value = static_cast<float>(a.any_number_or("value", 0));  // NaN too: outputs are poisoned with it in tests
    check(fc::fill(r.buf->ptr(), t, r.ld, r.rows, r.cols, value, default_stream(env)), a.what);
    return env.Undefined();
  });
}

// cast({ dst, dstDtype, ldDst, src, srcDtype, ldSrc, rows, cols })
Napi::Value Cast(const Napi::CallbackInfo& info) {
  return napi::call<DeviceFields>(info, "cast", [](Napi::Env env, const DeviceFields& a) -> Napi::Value {
    const DType dt = a.dtype("dstDtype"), st = a.dtype("srcDtype");
    const int64_t rows = a.count("rows", 1), cols = a.count("cols", 1);
    const int64_t ldd = a.ld("ldDst", cols, "cols"), lds = a.ld("ldSrc", cols, "cols");
    void* d = a.matrix("dst", rows, cols, ldd, dt);
    const void* s = a.matrix("src", rows, cols, lds, st);
    check(fc::cast(d, dt, ldd, s, st, lds, rows, cols, default_stream(env)), a.what);
    return env.Undefined();
  });
}

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  const fc::Status st = fc::stream_synchronize(default_stream(info.Env()));
  if (st != fc::Status::Ok) throw napi::make_error(info.Env(), failure(st, "synchronize"));
  return info.Env().Undefined();
}

}  // namespace

void RegisterMemory(Napi::Env env, Napi::Object exports) {
  napi::add_functions(env, exports, {{"alloc", DeviceBuffer::Alloc}, {"upload", Upload}, {"download", Download},
                                      {"downloadAsync", DownloadAsync}, {"fill", Fill}, {"cast", Cast},
                                      {"memoryStats", MemoryStats}, {"emptyCache", EmptyCache},
                                      {"synchronize", Synchronize}, {"synchronizeAsync", SynchronizeAsync}});
}

}  // namespace fused_lora::cuda_addon
