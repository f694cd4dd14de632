// Host ↔ device copies with dtype conversion, device casts and fills. The JS side always speaks
// fp32; bf16/fp16 live only on the device, so a conversion is one cast kernel over a staging copy.
#include "common.cuh"

namespace fused_lora::cuda {
namespace {

// A flat grid-stride loop over a (rows, cols) region: memory-bound, one element per step, reads
// and writes coalesced along rows. Casts are rare (uploads, master → compute copies), so no vectors.
template <typename Td, typename Ts>
__global__ void cast_kernel(Td* dst, int64_t ld_dst, const Ts* src, int64_t ld_src, int64_t rows, int64_t cols) {
  int64_t n = rows * cols;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = e / cols, c = e % cols;
    st_f(dst + r * ld_dst + c, ld_f(src + r * ld_src + c));
  }
}

// Fill: the same loop shape; used to zero padding and to NaN-poison outputs in tests.
template <typename T>
__global__ void fill_kernel(T* dst, int64_t ld, int64_t rows, int64_t cols, float value) {
  int64_t n = rows * cols;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x)
    st_f(dst + (e / cols) * ld + e % cols, value);
}

bool bad_2d(int64_t ld_a, int64_t ld_b, int64_t rows, int64_t cols) {
  return rows < 0 || cols < 0 || ld_a < cols || ld_b < cols;
}

}  // namespace

Status cast(void* dst, DType dt, int64_t ld_dst, const void* src, DType st_, int64_t ld_src, int64_t rows,
            int64_t cols, Stream s) {
  if (bad_2d(ld_dst, ld_src, rows, cols)) return fail(Status::Argument, "cast: leading dimension below the width");
  if (rows == 0 || cols == 0) return ok();
  return dispatch(dt, [&](auto d) {
    using Td = decltype(d);
    return dispatch(st_, [&](auto sv) {
      using Ts = decltype(sv);
      cast_kernel<Td, Ts><<<blocks_for(rows * cols, 256), 256, 0, as_stream(s)>>>(
          static_cast<Td*>(dst), ld_dst, static_cast<const Ts*>(src), ld_src, rows, cols);
      return check_launch("cast_kernel");
    });
  });
}

Status fill(void* dst, DType t, int64_t ld, int64_t rows, int64_t cols, float value, Stream s) {
  if (bad_2d(ld, ld, rows, cols)) return fail(Status::Argument, "fill: leading dimension below the width");
  if (rows == 0 || cols == 0) return ok();
  return dispatch(t, [&](auto tv) {
    using T = decltype(tv);
    fill_kernel<T><<<blocks_for(rows * cols, 256), 256, 0, as_stream(s)>>>(static_cast<T*>(dst), ld, rows, cols, value);
    return check_launch("fill_kernel");
  });
}

Status upload_f32(void* dst, DType dt, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows, int64_t cols,
                  Stream s) {
  if (bad_2d(ld_dst, ld_src, rows, cols)) return fail(Status::Argument, "upload: leading dimension below the width");
  if (rows == 0 || cols == 0) return ok();
  cudaStream_t cs = as_stream(s);
  if (dt == DType::F32)
    return check(cudaMemcpy2DAsync(dst, ld_dst * 4, src, ld_src * 4, cols * 4, rows, cudaMemcpyHostToDevice, cs),
                 "upload: cudaMemcpy2DAsync");
  void* stage = nullptr;
  if (Status st = device_alloc(&stage, rows * cols * 4, s); st != Status::Ok) return st;
  Status st = check(cudaMemcpy2DAsync(stage, cols * 4, src, ld_src * 4, cols * 4, rows, cudaMemcpyHostToDevice, cs),
                    "upload: cudaMemcpy2DAsync");
  if (st == Status::Ok) st = cast(dst, dt, ld_dst, stage, DType::F32, cols, rows, cols, s);
  device_free(stage, s);
  return st;
}

Status upload_bytes(void* dst, const void* src, size_t bytes, Stream s) {
  if (bytes == 0) return ok();
  return check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, as_stream(s)), "upload: cudaMemcpyAsync");
}

Status download_f32(float* dst, int64_t ld_dst, const void* src, DType st_, int64_t ld_src, int64_t rows, int64_t cols,
                    Stream s) {
  if (bad_2d(ld_dst, ld_src, rows, cols)) return fail(Status::Argument, "download: leading dimension below the width");
  if (rows == 0 || cols == 0) return ok();
  cudaStream_t cs = as_stream(s);
  Status st;
  if (st_ == DType::F32) {
    st = check(cudaMemcpy2DAsync(dst, ld_dst * 4, src, ld_src * 4, cols * 4, rows, cudaMemcpyDeviceToHost, cs),
               "download: cudaMemcpy2DAsync");
  } else {
    void* stage = nullptr;
    if (Status a = device_alloc(&stage, rows * cols * 4, s); a != Status::Ok) return a;
    st = cast(stage, DType::F32, cols, src, st_, ld_src, rows, cols, s);
    if (st == Status::Ok)
      st = check(cudaMemcpy2DAsync(dst, ld_dst * 4, stage, cols * 4, cols * 4, rows, cudaMemcpyDeviceToHost, cs),
                 "download: cudaMemcpy2DAsync");
    device_free(stage, s);
  }
  if (st != Status::Ok) return st;
  return check(cudaStreamSynchronize(cs), "download: cudaStreamSynchronize");
}

}  // namespace fused_lora::cuda
