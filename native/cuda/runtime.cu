// The runtime's state: device discovery (once, remembered), streams, dtype tables and the
// thread-local last error. Linked with the static CUDA runtime, so all of this works, and says
// "no driver" or "no device", on a machine with no GPU.
#include <mutex>

#include "common.cuh"
#include "tile_math.h"

namespace fused_lora::cuda {

namespace {
thread_local std::string g_last_error;
}

const std::string& last_error() { return g_last_error; }
Status ok() { g_last_error.clear(); return Status::Ok; }
Status fail(Status st, const std::string& msg) { g_last_error = msg; return st; }
Status check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::Ok;
  cudaGetLastError();  // clear a sticky-free error so the next call starts clean
  Status st = e == cudaErrorMemoryAllocation ? Status::OutOfMemory
            : (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) ? Status::NoDevice
                                                                            : Status::CudaError;
  return fail(st, std::string(what) + ": " + cudaGetErrorString(e) + " (" + cudaGetErrorName(e) + ")");
}

size_t dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }
const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::BF16: return "bfloat16";
    case DType::F16: return "float16";
  }
  return "unknown";
}
int64_t rank_pad(int64_t r) { return tiles::rank_pad(r); }

const DeviceInfo& device_info() {
  static DeviceInfo info;
  static std::once_flag once;
  std::call_once(once, [] {
    cudaRuntimeGetVersion(&info.runtime_version);
    cudaDriverGetVersion(&info.driver_version);  // 0 when no driver is installed
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      // Name the case first: no driver (libcuda not found or too old) or no device.
      const char* what = info.driver_version == 0 ? "no CUDA driver" : e == cudaErrorNoDevice ? "no CUDA device"
                         : e == cudaErrorInsufficientDriver ? "CUDA driver too old" : "CUDA unavailable";
      info.reason = std::string(what) + " (cudaGetDeviceCount: " + cudaGetErrorString(e) + ", " + cudaGetErrorName(e) + ")";
      cudaGetLastError();
      return;
    }
    info.device_count = n;
    if (n == 0) { info.reason = "no CUDA device (cudaGetDeviceCount returned 0)"; return; }
    cudaDeviceProp p{};
    e = cudaGetDeviceProperties(&p, 0);
    if (e != cudaSuccess) {
      info.reason = std::string("cudaGetDeviceProperties: ") + cudaGetErrorString(e);
      cudaGetLastError();
      return;
    }
    info.name = p.name;
    info.major = p.major;
    info.minor = p.minor;
    info.memory_bytes = p.totalGlobalMem;
    info.multiprocessors = p.multiProcessorCount;
    if (p.major < 8) {
      info.reason = "compute capability " + std::to_string(p.major) + "." + std::to_string(p.minor) +
                    " is below 8.0 (the kernels need sm_80's mma.sync bf16 and cp.async)";
      return;
    }
    info.available = true;
  });
  return info;
}

static Status require_device() {
  const DeviceInfo& d = device_info();
  return d.available ? Status::Ok : fail(Status::NoDevice, "no CUDA device: " + d.reason);
}

Status stream_create(Stream* out) {
  if (Status st = require_device(); st != Status::Ok) return st;
  cudaStream_t s;
  if (Status st = check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate"); st != Status::Ok)
    return st;
  *out = s;
  return ok();
}
Status stream_destroy(Stream s) { return s ? check(cudaStreamDestroy(as_stream(s)), "cudaStreamDestroy") : ok(); }
Status stream_synchronize(Stream s) {
  if (Status st = require_device(); st != Status::Ok) return st;
  return check(cudaStreamSynchronize(as_stream(s)), "cudaStreamSynchronize (an earlier kernel may have failed)");
}

}  // namespace fused_lora::cuda
