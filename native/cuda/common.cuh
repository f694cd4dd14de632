// Shared by the .cu files: dtype traits (load as fp32, store from fp32), the error plumbing that turns
// a failed CUDA call into a Status plus last_error() text, and the dtype dispatch.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "fused_lora/cuda.h"

namespace fused_lora::cuda {

// Records the message for last_error() and returns the status (runtime.cu).
Status fail(Status st, const std::string& msg);
Status ok();
// Maps a CUDA error to a Status with "<what>: <cuda error string>".
Status check(cudaError_t e, const char* what);
// After a launch: the launch error, if any.
inline Status check_launch(const char* kernel) { return check(cudaGetLastError(), kernel); }

inline cudaStream_t as_stream(Stream s) { return static_cast<cudaStream_t>(s); }

template <typename T> struct Elem;
template <> struct Elem<float> {
  static __device__ __forceinline__ float load(const float* p) { return *p; }
  static __device__ __forceinline__ float to_f(float v) { return v; }
  static __device__ __forceinline__ float from_f(float v) { return v; }
};
template <> struct Elem<__nv_bfloat16> {
  static __device__ __forceinline__ float load(const __nv_bfloat16* p) { return __bfloat162float(*p); }
  static __device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 from_f(float v) { return __float2bfloat16_rn(v); }
};
template <> struct Elem<__half> {
  static __device__ __forceinline__ float load(const __half* p) { return __half2float(*p); }
  static __device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half from_f(float v) { return __float2half_rn(v); }
};

template <typename T> __device__ __forceinline__ float ld_f(const T* p) { return Elem<T>::load(p); }
template <typename T> __device__ __forceinline__ void st_f(T* p, float v) { *p = Elem<T>::from_f(v); }

// Calls f(T{}) with T the C++ type of dtype t.
template <typename F> Status dispatch(DType t, F&& f) {
  switch (t) {
    case DType::F32: return f(float{});
    case DType::BF16: return f(__nv_bfloat16{});
    case DType::F16: return f(__half{});
  }
  return fail(Status::Argument, "unknown dtype " + std::to_string(static_cast<int>(t)));
}

// Returns the status of expr from the enclosing function when it is not Ok: the sequences of kernel
// launches in lora.cu and multi_lora.cu stop at the first failure.
#define FL_TRY(expr)                                        \
  do {                                                      \
    if (Status st_ = (expr); st_ != Status::Ok) return st_; \
  } while (0)

inline int blocks_for(int64_t n, int threads, int64_t cap = 65535LL * 16) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  return static_cast<int>(b < cap ? b : cap);
}

}  // namespace fused_lora::cuda
