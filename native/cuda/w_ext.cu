// Refreshes W_ext's LoRA blocks from the fp32 masters after an optimizer step: scaling·Bᵀ into the
// right-hand columns and Aᵀ into the bottom rows (O·r + r·I elements: negligible next to a step),
// zeros in the padding. Scaling is folded here, once, never into an (M, O) pass.
#include "common.cuh"
#include "tile_math.h"

namespace fused_lora::cuda {
namespace {

template <typename T>
__global__ void refresh_w_ext_kernel(int64_t I, int64_t O, int64_t r, T* w, const float* A, const float* B,
                                     float scaling) {
  const int64_t r_pad = tiles::rank_pad(r);
  const int64_t n_right = O * r_pad;              // rows 0..O-1, columns I..I+r_pad-1
  const int64_t n_bottom = r_pad * (I + r_pad);   // rows O..O+r_pad-1, all columns
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n_right + n_bottom;
       e += (int64_t)gridDim.x * blockDim.x) {
    if (e < n_right) {
      int64_t o = e / r_pad, j = e % r_pad;
      st_f(w + tiles::w_ext_Bt(I, r, o, j), j < r ? scaling * B[j * O + o] : 0.f);
    } else {
      int64_t f = e - n_right, j = f / (I + r_pad), i = f % (I + r_pad);
      st_f(w + tiles::w_ext_At(I, O, r, j, i), (j < r && i < I) ? A[i * r + j] : 0.f);
    }
  }
}

}  // namespace

Status refresh_w_ext(DType t, int64_t I, int64_t O, int64_t r, void* w_ext, int64_t ld_w, const float* A,
                     const float* B, float scaling, Stream s) {
  if (I < 1 || O < 1 || r < 1 || ld_w != tiles::ext_ld(I, r))
    return fail(Status::Argument, "refresh_w_ext: expected I, O, r >= 1 and ld_w == I + rank_pad(r)");
  return dispatch(t, [&](auto tv) {
    using T = decltype(tv);
    int64_t n = O * tiles::rank_pad(r) + tiles::rank_pad(r) * ld_w;
    refresh_w_ext_kernel<T><<<blocks_for(n, 256), 256, 0, as_stream(s)>>>(I, O, r, static_cast<T*>(w_ext), A, B,
                                                                           scaling);
    return check_launch("refresh_w_ext_kernel");
  });
}

}  // namespace fused_lora::cuda
