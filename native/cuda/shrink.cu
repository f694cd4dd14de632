// The shrink: s = x·A, written straight into x_ext's padding columns so the forward is one GEMM.
// Memory-bound (r ≤ 64 multiply-adds per element of x): what matters is reading x once, coalesced.
// A block owns 32 rows (4 per warp) and walks I in 256-wide slices; each slice of A (256 × 16 ranks,
// fp32) is staged in shared memory with rows padded to 17 words so the 32 lanes, each on its own i,
// read distinct banks. Each lane keeps 4 rows × 16 ranks of partial sums; a butterfly reduction
// across the warp finishes them. Ranks beyond 16 take further passes (x is re-read per 16 ranks).
#include "common.cuh"
#include "tile_math.h"

namespace fused_lora::cuda {
namespace {

constexpr int kRows = 32, kRowsPerWarp = 4, kSlice = 256, kRc = 16, kPadLd = kRc + 1;

template <typename T>
__global__ void __launch_bounds__(256) shrink_kernel(int64_t M, int64_t I, int64_t r, T* x_ext, int64_t ld,
                                                     const float* __restrict__ A) {
  __shared__ float As[kSlice * kPadLd];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t m0 = blockIdx.x * (int64_t)kRows + warp * kRowsPerWarp;
  const int64_t r_pad = tiles::rank_pad(r);
  for (int64_t j0 = 0; j0 < r; j0 += kRc) {
    const int rc = static_cast<int>(r - j0 < kRc ? r - j0 : kRc);
    float acc[kRowsPerWarp][kRc];
#pragma unroll
    for (int a = 0; a < kRowsPerWarp; ++a)
#pragma unroll
      for (int j = 0; j < kRc; ++j) acc[a][j] = 0.f;
    for (int64_t i0 = 0; i0 < I; i0 += kSlice) {
      __syncthreads();
      for (int e = threadIdx.x; e < kSlice * kRc; e += blockDim.x) {
        int ii = e / kRc, j = e % kRc;
        int64_t i = i0 + ii;
        As[ii * kPadLd + j] = (i < I && j < rc) ? A[i * r + j0 + j] : 0.f;
      }
      __syncthreads();
#pragma unroll 2
      for (int t = 0; t < kSlice / 32; ++t) {
        const int ii = t * 32 + lane;
        const int64_t i = i0 + ii;
        float xv[kRowsPerWarp];
#pragma unroll
        for (int a = 0; a < kRowsPerWarp; ++a)
          xv[a] = (i < I && m0 + a < M) ? ld_f(x_ext + (m0 + a) * ld + i) : 0.f;
#pragma unroll
        for (int j = 0; j < kRc; ++j) {
          float av = As[ii * kPadLd + j];
#pragma unroll
          for (int a = 0; a < kRowsPerWarp; ++a) acc[a][j] = fmaf(xv[a], av, acc[a][j]);
        }
      }
    }
#pragma unroll
    for (int a = 0; a < kRowsPerWarp; ++a)
#pragma unroll
      for (int j = 0; j < kRc; ++j)
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) acc[a][j] += __shfl_xor_sync(0xffffffffu, acc[a][j], o);
#pragma unroll
    for (int a = 0; a < kRowsPerWarp; ++a)
#pragma unroll
      for (int j = 0; j < kRc; ++j)
        if (lane == j && j < rc && m0 + a < M) st_f(x_ext + tiles::ext_pad(I, ld, m0 + a, j0 + j), acc[a][j]);
  }
  // Zero the padding beyond r, so the GEMM's extra K columns contribute exactly 0.
  for (int a = 0; a < kRowsPerWarp; ++a)
    for (int64_t j = r + lane; j < r_pad; j += 32)
      if (m0 + a < M) st_f(x_ext + tiles::ext_pad(I, ld, m0 + a, j), 0.f);
}

}  // namespace

Status shrink(DType t, int64_t M, int64_t I, int64_t r, void* x_ext, int64_t ld, const float* A, Stream s) {
  if (M < 1 || I < 1 || r < 1 || ld < I + tiles::rank_pad(r))
    return fail(Status::Argument, "shrink: expected M, I, r >= 1 and ld >= I + rank_pad(r)");
  return dispatch(t, [&](auto tv) {
    using T = decltype(tv);
    dim3 grid(static_cast<unsigned>(tiles::ceil_div(M, kRows)));
    shrink_kernel<T><<<grid, 256, 0, as_stream(s)>>>(M, I, r, static_cast<T*>(x_ext), ld, A);
    return check_launch("shrink_kernel");
  });
}

}  // namespace fused_lora::cuda
