// The dy-pass: ds = scaling·dy·Bᵀ (M, r) and dB = scaling·sᵀ·dy (r, O) from one read of dy.
// Memory-bound. A block stages a 64 × 128 tile of dy in shared memory (fp32) once, then for each
// 16-rank chunk computes both partial products from it: ds needs a sum over O (across blocks in
// x), dB a sum over M (across blocks in y), so both are finished with fp32 atomics (ds into an
// fp32 workspace, later written into dy_ext's padding by ds_store_kernel). Rows of the staged B
// chunk are padded to 129 words so 16 lanes on 16 ranks hit distinct banks.
#include "common.cuh"
#include "tile_math.h"

namespace fused_lora::cuda {
namespace {

constexpr int kRm = 64, kCo = 128, kRc = 16;

template <typename T>
__global__ void __launch_bounds__(256) dy_pass_kernel(int64_t M, int64_t O, int64_t r, const T* dy, int64_t ld_dy,
                                                      const T* s_, int64_t ld_s, const float* __restrict__ B,
                                                      float scaling, float* ds_f32, float* dB) {
  __shared__ float dys[kRm][kCo];
  __shared__ float ss[kRm][kRc + 1];
  __shared__ float Bs[kRc][kCo + 1];
  const int64_t m0 = blockIdx.y * (int64_t)kRm, o0 = blockIdx.x * (int64_t)kCo;
  for (int e = threadIdx.x; e < kRm * kCo; e += blockDim.x) {
    int mm = e / kCo, oo = e % kCo;
    dys[mm][oo] = (m0 + mm < M && o0 + oo < O) ? ld_f(dy + (m0 + mm) * ld_dy + o0 + oo) : 0.f;
  }
  for (int64_t j0 = 0; j0 < r; j0 += kRc) {
    const int rc = static_cast<int>(r - j0 < kRc ? r - j0 : kRc);
    __syncthreads();
    for (int e = threadIdx.x; e < kRm * kRc; e += blockDim.x) {
      int mm = e / kRc, j = e % kRc;
      ss[mm][j] = (m0 + mm < M && j < rc) ? ld_f(s_ + (m0 + mm) * ld_s + j0 + j) : 0.f;
    }
    for (int e = threadIdx.x; e < kRc * kCo; e += blockDim.x) {
      int j = e / kCo, oo = e % kCo;
      Bs[j][oo] = (j < rc && o0 + oo < O) ? B[(j0 + j) * O + o0 + oo] : 0.f;
    }
    __syncthreads();
    // ds partials: 64 rows × 16 ranks = 1024 dot products of length 128, 4 per thread.
    for (int e = threadIdx.x; e < kRm * kRc; e += blockDim.x) {
      int mm = e / kRc, j = e % kRc;
      float acc = 0.f;
#pragma unroll 8
      for (int oo = 0; oo < kCo; ++oo) acc = fmaf(dys[mm][oo], Bs[j][oo], acc);
      if (m0 + mm < M && j < rc) atomicAdd(ds_f32 + (m0 + mm) * r + j0 + j, scaling * acc);
    }
    // dB partials: 16 ranks × 128 columns = 2048 dot products of length 64, 8 per thread.
    for (int e = threadIdx.x; e < kRc * kCo; e += blockDim.x) {
      int j = e / kCo, oo = e % kCo;
      float acc = 0.f;
#pragma unroll 8
      for (int mm = 0; mm < kRm; ++mm) acc = fmaf(ss[mm][j], dys[mm][oo], acc);
      if (j < rc && o0 + oo < O) atomicAdd(dB + (j0 + j) * O + o0 + oo, scaling * acc);
    }
  }
}

// ds (fp32 workspace) → dy_ext's padding columns in the compute dtype, zeros beyond r.
template <typename T>
__global__ void ds_store_kernel(int64_t M, int64_t O, int64_t r, int64_t r_pad, const float* ds_f32, T* dy_ext,
                                int64_t ld) {
  int64_t n = M * r_pad;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
    int64_t m = e / r_pad, j = e % r_pad;
    st_f(dy_ext + tiles::ext_pad(O, ld, m, j), j < r ? ds_f32[m * r + j] : 0.f);
  }
}

}  // namespace

Status dy_pass(DType t, int64_t M, int64_t O, int64_t r, void* dy_ext, int64_t ld_dy, const void* s_, int64_t ld_s,
               const float* B, float scaling, float* ds_f32, float* dB, bool accumulate, Stream s) {
  const int64_t r_pad = tiles::rank_pad(r);
  if (M < 1 || O < 1 || r < 1 || ld_dy < O + r_pad || ld_s < r)
    return fail(Status::Argument, "dy_pass: expected M, O, r >= 1, ld_dy >= O + rank_pad(r), ld_s >= r");
  cudaStream_t cs = as_stream(s);
  if (Status st = check(cudaMemsetAsync(ds_f32, 0, M * r * sizeof(float), cs), "dy_pass: memset ds"); st != Status::Ok)
    return st;
  if (!accumulate)
    if (Status st = check(cudaMemsetAsync(dB, 0, r * O * sizeof(float), cs), "dy_pass: memset dB"); st != Status::Ok)
      return st;
  return dispatch(t, [&](auto tv) {
    using T = decltype(tv);
    dim3 grid(static_cast<unsigned>(tiles::ceil_div(O, kCo)), static_cast<unsigned>(tiles::ceil_div(M, kRm)));
    dy_pass_kernel<T><<<grid, 256, 0, cs>>>(M, O, r, static_cast<const T*>(dy_ext), ld_dy,
                                            static_cast<const T*>(s_), ld_s, B, scaling, ds_f32, dB);
    if (Status st = check_launch("dy_pass_kernel"); st != Status::Ok) return st;
    ds_store_kernel<T><<<blocks_for(M * r_pad, 256), 256, 0, cs>>>(M, O, r, r_pad, ds_f32, static_cast<T*>(dy_ext),
                                                                    ld_dy);
    return check_launch("ds_store_kernel");
  });
}

}  // namespace fused_lora::cuda
