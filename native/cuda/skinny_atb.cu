// C (+)= alpha · Xᵀ·Y with a rank-sized side: dA = xᵀ·ds (I, r) and PEFT's dB = sᵀ·du written as
// its transpose. Memory-bound: the cost is reading X (M, P) once. A block stages a 64 × 128 tile of
// X (fp32 in shared memory) and the matching 64 × 16 slice of Y, computes the 128 × 16 partial
// product (8 per thread, consecutive p across the warp so X reads are conflict-free, Y broadcast),
// and adds it to C with fp32 atomics (the sum over M spans the blocks in y).
#include "common.cuh"
#include "tile_math.h"

namespace fused_lora::cuda {
namespace {

constexpr int kRm = 64, kPc = 128, kQc = 16;

template <typename TX, typename TY>
__global__ void __launch_bounds__(256) skinny_atb_kernel(int64_t M, int64_t P, int64_t Q, float alpha, const TX* X,
                                                         int64_t ldx, const TY* Y, int64_t ldy, float* C,
                                                         int64_t ldc_p, int64_t ldc_q) {
  __shared__ float xs[kRm][kPc];
  __shared__ float ys[kRm][kQc];
  const int64_t m0 = blockIdx.y * (int64_t)kRm, p0 = blockIdx.x * (int64_t)kPc;
  for (int e = threadIdx.x; e < kRm * kPc; e += blockDim.x) {
    int mm = e / kPc, pp = e % kPc;
    xs[mm][pp] = (m0 + mm < M && p0 + pp < P) ? ld_f(X + (m0 + mm) * ldx + p0 + pp) : 0.f;
  }
  for (int64_t q0 = 0; q0 < Q; q0 += kQc) {
    __syncthreads();
    for (int e = threadIdx.x; e < kRm * kQc; e += blockDim.x) {
      int mm = e / kQc, q = e % kQc;
      ys[mm][q] = (m0 + mm < M && q0 + q < Q) ? ld_f(Y + (m0 + mm) * ldy + q0 + q) : 0.f;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < kPc * kQc; e += blockDim.x) {
      int q = e / kPc, pp = e % kPc;
      float acc = 0.f;
#pragma unroll 8
      for (int mm = 0; mm < kRm; ++mm) acc = fmaf(xs[mm][pp], ys[mm][q], acc);
      if (p0 + pp < P && q0 + q < Q) atomicAdd(C + (p0 + pp) * ldc_p + (q0 + q) * ldc_q, alpha * acc);
    }
  }
}

}  // namespace

Status skinny_atb(int64_t M, int64_t P, int64_t Q, float alpha, DType tx, const void* X, int64_t ldx, DType ty,
                  const void* Y, int64_t ldy, float* C, int64_t ldc_p, int64_t ldc_q, bool accumulate, Stream s) {
  if (M < 1 || P < 1 || Q < 1 || ldx < P || ldy < Q)
    return fail(Status::Argument, "skinny_atb: expected M, P, Q >= 1, ldx >= P, ldy >= Q");
  cudaStream_t cs = as_stream(s);
  if (!accumulate)  // C is dense (P·Q floats) in either orientation
    if (Status st = check(cudaMemsetAsync(C, 0, P * Q * sizeof(float), cs), "skinny_atb: memset C"); st != Status::Ok)
      return st;
  return dispatch(tx, [&](auto xv) {
    using TX = decltype(xv);
    return dispatch(ty, [&](auto yv) {
      using TY = decltype(yv);
      dim3 grid(static_cast<unsigned>(tiles::ceil_div(P, kPc)), static_cast<unsigned>(tiles::ceil_div(M, kRm)));
      skinny_atb_kernel<TX, TY><<<grid, 256, 0, cs>>>(M, P, Q, alpha, static_cast<const TX*>(X), ldx,
                                                      static_cast<const TY*>(Y), ldy, C, ldc_p, ldc_q);
      return check_launch("skinny_atb_kernel");
    });
  });
}

}  // namespace fused_lora::cuda
