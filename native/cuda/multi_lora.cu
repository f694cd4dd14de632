// Many adapters on one base on the device. Their ranks are concatenated, as LoRAFusion and mLoRA do:
// adapter i owns the columns [off_i, off_i + rank_pad(r_i)) of a rank R = Σ rank_pad(r_i), and the
// layer is the single-adapter one of rank R over A_cat (I, R) and scaling_i·B_i stacked into B_cat
// (R, O), with each row keeping only its own adapter's block of s (and of ds): select_rank_blocks
// zeroes the other blocks, so one GEMM over W_ext per direction serves every adapter and every row,
// rows in any order. The extra arithmetic is R/I of the frozen GEMM, plus a shrink of R ranks.
#include "common.cuh"
#include "tile_math.h"

namespace fused_lora::cuda {
namespace {

#define FL_TRY(expr)                                        \
  do {                                                      \
    if (Status st_ = (expr); st_ != Status::Ok) return st_; \
  } while (0)

// Keeps element (m, c) of the (M, R) region when column c belongs to row m's adapter, else zeroes it
// there and, where given, in the fp32 copy (M, R).
template <typename T>
__global__ void select_kernel(int64_t M, int64_t R, T* ext, int64_t ld, const int32_t* __restrict__ row_adapter,
                              const int32_t* __restrict__ col_adapter, float* f32) {
  const int64_t n = M * R;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t m = e / R, c = e % R;
    if (row_adapter[m] == col_adapter[c]) continue;
    st_f(ext + m * ld + c, 0.f);
    if (f32) f32[e] = 0.f;
  }
}

Status check_dims(const LoraDims& d, const char* what) {
  if (d.M < 1 || d.I < 1 || d.O < 1 || d.r < 1 || tiles::rank_pad(d.r) != d.r)
    return fail(Status::Argument, std::string(what) + ": expected M, I, O >= 1 and R a positive multiple of the rank step");
  return Status::Ok;
}

}  // namespace

Status select_rank_blocks(DType t, int64_t M, int64_t R, void* ext, int64_t ld, const int32_t* row_adapter,
                          const int32_t* col_adapter, float* f32, Stream s) {
  if (M < 0 || R < 1 || ld < R) return fail(Status::Argument, "select_rank_blocks: bad shape");
  if (M == 0) return ok();
  return dispatch(t, [&](auto tv) {
    using T = decltype(tv);
    select_kernel<T><<<blocks_for(M * R, 256), 256, 0, as_stream(s)>>>(M, R, static_cast<T*>(ext), ld, row_adapter,
                                                                        col_adapter, f32);
    return check_launch("select_kernel");
  });
}

Status multi_lora_forward_fused(DType t, const LoraDims& d, void* x_ext, const void* w_ext, const void* bias,
                                const float* A_cat, const int32_t* row_adapter, const int32_t* col_adapter, void* y,
                                int64_t ld_y, Math math, Stream s) {
  FL_TRY(check_dims(d, "multi_lora_forward_fused"));
  const int64_t ld_x = tiles::ext_ld(d.I, d.r);
  FL_TRY(shrink(t, d.M, d.I, d.r, x_ext, ld_x, A_cat, s));  // every row against every adapter
  void* s_ = static_cast<char*>(x_ext) + d.I * dtype_size(t);
  FL_TRY(select_rank_blocks(t, d.M, d.r, s_, ld_x, row_adapter, col_adapter, nullptr, s));  // its own block only
  GemmArgs g;
  g.t = t; g.math = math; g.b_layout = BLayout::NT;
  g.M = d.M; g.N = d.O; g.K = ld_x;
  g.A = x_ext; g.lda = ld_x;
  g.B = w_ext; g.ldb = ld_x;  // [W | (scaling_i·B_i)ᵀ of every adapter]
  g.bias = bias; g.C = y; g.ldc = ld_y;
  return gemm(g, s);
}

Status multi_lora_backward_fused(DType t, const LoraDims& d, const void* x_ext, void* dy_ext, const void* w_ext,
                                 const float* B_cat, const int32_t* row_adapter, const int32_t* col_adapter,
                                 float* ds_f32, float* dA_cat, float* dB_cat, void* dx, int64_t ld_dx, Math math,
                                 Stream s) {
  FL_TRY(check_dims(d, "multi_lora_backward_fused"));
  const int64_t ld_x = tiles::ext_ld(d.I, d.r), ld_dy = tiles::ext_ld(d.O, d.r);
  const void* s_ = static_cast<const char*>(x_ext) + d.I * dtype_size(t);
  // ds = dy·B_catᵀ (B_cat holds scaling_i·B_i) for every block, then each row keeps its own; dB_cat =
  // sᵀ·dy is right blockwise already (s is zero outside each row's block) but lacks scaling_i, which
  // the caller applies when it adds block i into adapter i's dB.
  FL_TRY(dy_pass(t, d.M, d.O, d.r, dy_ext, ld_dy, s_, ld_x, B_cat, 1.f, ds_f32, dB_cat, false, s));
  void* ds_ext = static_cast<char*>(dy_ext) + d.O * dtype_size(t);
  FL_TRY(select_rank_blocks(t, d.M, d.r, ds_ext, ld_dy, row_adapter, col_adapter, ds_f32, s));
  FL_TRY(skinny_atb(d.M, d.I, d.r, 1.f, t, x_ext, ld_x, DType::F32, ds_f32, d.r, dA_cat, d.r, 1, false, s));
  if (!dx) return ok();
  GemmArgs g;
  g.t = t; g.math = math; g.b_layout = BLayout::NN;
  g.M = d.M; g.N = d.I; g.K = ld_dy;
  g.A = dy_ext; g.lda = ld_dy;  // [dy | ds, each row its block]
  g.B = w_ext; g.ldb = ld_x;    // [W ; A_catᵀ]
  g.C = dx; g.ldc = ld_dx;
  return gemm(g, s);
}

}  // namespace fused_lora::cuda
