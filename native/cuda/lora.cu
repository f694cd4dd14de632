// The LoRA layer's forward and backward on the device, as sequences of the kernels above. The fused
// path is the concatenation of docs/ARCHITECTURE.md ("Fusion"): one GEMM over W_ext per direction
// plus the small memory-bound kernels. The unfused path follows PEFT's order, with its extra (M, O) passes, so the
// benchmark measures what fusion saves. No allocation here: every buffer comes from the caller.
#include "common.cuh"
#include "tile_math.h"

namespace fused_lora::cuda {
namespace {

Status check_dims(const LoraDims& d, const char* what) {
  if (d.M < 1 || d.I < 1 || d.O < 1 || d.r < 1)
    return fail(Status::Argument, std::string(what) + ": expected M, I, O, r >= 1");
  return Status::Ok;
}

}  // namespace

Status lora_forward_fused(DType t, const LoraDims& d, void* x_ext, const void* w_ext, const void* bias, const float* A,
                          void* y, int64_t ld_y, Math math, Stream s) {
  FL_TRY(check_dims(d, "lora_forward_fused"));
  const int64_t ld_x = tiles::ext_ld(d.I, d.r);
  FL_TRY(shrink(t, d.M, d.I, d.r, x_ext, ld_x, A, s));
  GemmArgs g;
  g.t = t; g.math = math; g.b_layout = BLayout::NT;
  g.M = d.M; g.N = d.O; g.K = ld_x;
  g.A = x_ext; g.lda = ld_x;
  g.B = w_ext; g.ldb = ld_x;  // rows 0..O-1 of W_ext: [W | scaling·Bᵀ | 0]
  g.bias = bias; g.C = y; g.ldc = ld_y;
  return gemm(g, s);
}

Status lora_backward_fused(DType t, const LoraDims& d, const void* x_ext, void* dy_ext, const void* w_ext,
                           const float* B, float* ds_f32, float* dA, float* dB, void* dx, int64_t ld_dx,
                           bool accumulate, Math math, Stream s) {
  FL_TRY(check_dims(d, "lora_backward_fused"));
  const int64_t ld_x = tiles::ext_ld(d.I, d.r), ld_dy = tiles::ext_ld(d.O, d.r);
  const void* s_ = static_cast<const char*>(x_ext) + d.I * dtype_size(t);  // s lives in x_ext's padding
  FL_TRY(dy_pass(t, d.M, d.O, d.r, dy_ext, ld_dy, s_, ld_x, B, d.scaling, ds_f32, dB, accumulate, s));
  FL_TRY(skinny_atb(d.M, d.I, d.r, 1.f, t, x_ext, ld_x, DType::F32, ds_f32, d.r, dA, d.r, 1, accumulate, s));
  if (!dx) return ok();
  GemmArgs g;
  g.t = t; g.math = math; g.b_layout = BLayout::NN;
  g.M = d.M; g.N = d.I; g.K = ld_dy;
  g.A = dy_ext; g.lda = ld_dy;  // [dy | ds | 0]
  g.B = w_ext; g.ldb = ld_x;    // columns 0..I-1 of W_ext: [W ; Aᵀ ; 0]
  g.C = dx; g.ldc = ld_dx;
  return gemm(g, s);
}

Status lora_forward_unfused(DType t, const LoraDims& d, const void* x, const void* W, const void* bias,
                            const void* A_t, const void* B_t, void* s_, void* u, void* y, Math math, Stream s) {
  FL_TRY(check_dims(d, "lora_forward_unfused"));
  GemmArgs g;
  g.t = t; g.math = math;
  // 1. base: y = x·Wᵀ + b
  g.b_layout = BLayout::NT; g.M = d.M; g.N = d.O; g.K = d.I;
  g.A = x; g.lda = d.I; g.B = W; g.ldb = d.I; g.bias = bias; g.C = y; g.ldc = d.O;
  FL_TRY(gemm(g, s));
  // 2. s = x·A  (A (I, r) is (K, N))
  g.b_layout = BLayout::NN; g.N = d.r; g.K = d.I; g.B = A_t; g.ldb = d.r; g.bias = nullptr; g.C = s_; g.ldc = d.r;
  FL_TRY(gemm(g, s));
  // 3. u = s·B  (B (r, O) is (K, N))
  g.N = d.O; g.K = d.r; g.A = s_; g.lda = d.r; g.B = B_t; g.ldb = d.O; g.C = u; g.ldc = d.O;
  FL_TRY(gemm(g, s));
  // 4. u *= scaling; 5. y += u — two passes over (M, O), as PEFT does them.
  FL_TRY(axpby(t, d.M, d.O, d.scaling, u, d.O, 0.f, u, d.O, s));
  return axpby(t, d.M, d.O, 1.f, u, d.O, 1.f, y, d.O, s);
}

Status lora_backward_unfused(DType t, const LoraDims& d, const void* x, const void* s_, const void* dy,
                             const void* W, const void* A_t, const void* B_t, void* du, void* ds, float* dA,
                             float* dB, void* dx, bool accumulate, Math math, Stream s) {
  FL_TRY(check_dims(d, "lora_backward_unfused"));
  GemmArgs g;
  g.t = t; g.math = math;
  // 1. dx = dy·W  (W (O, I) is (K, N))
  if (dx) {
    g.b_layout = BLayout::NN; g.M = d.M; g.N = d.I; g.K = d.O;
    g.A = dy; g.lda = d.O; g.B = W; g.ldb = d.I; g.C = dx; g.ldc = d.I;
    FL_TRY(gemm(g, s));
  }
  // 2. du = scaling·dy (the autograd of "multiply by scaling")
  FL_TRY(axpby(t, d.M, d.O, d.scaling, dy, d.O, 0.f, du, d.O, s));
  // 3. dB = sᵀ·du, written as (dBᵀ)(O, r) = duᵀ·s through C's strides
  FL_TRY(skinny_atb(d.M, d.O, d.r, 1.f, t, du, d.O, t, s_, d.r, dB, 1, d.O, accumulate, s));
  // 4. ds = du·Bᵀ  (B (r, O) is (N, K))
  g.b_layout = BLayout::NT; g.M = d.M; g.N = d.r; g.K = d.O;
  g.A = du; g.lda = d.O; g.B = B_t; g.ldb = d.O; g.C = ds; g.ldc = d.r;
  FL_TRY(gemm(g, s));
  // 5. dA = xᵀ·ds
  FL_TRY(skinny_atb(d.M, d.I, d.r, 1.f, t, x, d.I, t, ds, d.r, dA, d.r, 1, accumulate, s));
  // 6. dx += ds·Aᵀ  (A (I, r) is (N, K))
  if (dx) {
    g.b_layout = BLayout::NT; g.M = d.M; g.N = d.I; g.K = d.r;
    g.A = ds; g.lda = d.r; g.B = A_t; g.ldb = d.r; g.C = dx; g.ldc = d.I; g.beta = 1.f;
    FL_TRY(gemm(g, s));
  }
  return ok();
}

}  // namespace fused_lora::cuda
