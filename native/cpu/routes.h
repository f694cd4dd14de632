// Which GEMM runs each product of the LoRA kernels (lora.cpp says why, with the measurements), shared
// by the single-adapter layer (lora.cpp) and the multi-adapter one (multi_lora.cpp), so both route
// every product the same way. CPU-internal.
#pragma once
#include <cstdint>

#include "fused_lora/gemm.h"
#include "fused_lora/lowp.h"

namespace fused_lora {

enum class Route : uint8_t { Any, Builtin };

// Frozen-size GEMMs of up to this many rows run on the built-in GEMM even beside a BLAS, by the
// built-in kernel's ISA (isa.h); lora.cpp has the measurements.
int64_t builtin_max_rows_frozen();
// Every product with r as one of its dimensions.
constexpr Route kRankRoute = Route::Builtin;

// sgemm() on the route: Builtin takes the built-in GEMM even where a BLAS is loaded.
void gemm(Route route, Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
Route frozen_route(int64_t M);

// y (M, O) = x·Wᵀ + beta·y for W (O, I), or x·W for W stored (I, O) (io).
void frozen_forward(const float* x, const float* W, bool io, float beta, float* y, int64_t M, int64_t I, int64_t O);
// dx (M, I) = dy·W + beta·dx for W (O, I), or dy·Wᵀ for W stored (I, O) (io).
void frozen_backward(const float* dy, const float* W, bool io, float beta, float* dx, int64_t M, int64_t I, int64_t O);

// The same for a frozen weight in any format of lowp.h (O, I): F32 as above (W.f32, not io), the others
// through their own GEMMs (wgemm_nt, wgemm_nn).
void frozen_forward(const float* x, const FrozenW& W, float beta, float* y, int64_t M);
void frozen_backward(const float* dy, const FrozenW& W, float beta, float* dx, int64_t M);

// dx (M, I) = ds·Aᵀ for A (I, r), written without reading dx: from lora_term_dx_rank_r(M, I) on
// rank_r_product over Aᵀ (transposed here), else on the built-in GEMM reading A in place.
bool lora_term_dx_rank_r(int64_t M, int64_t I);
void lora_term_dx(const float* ds, const float* A, float* dx, int64_t M, int64_t I, int64_t r);

// bf16 activations (Bf16Io, lora.h): an fp32 buffer of n floats per operand slot (0 x, 1 dy, 2 y,
// 3 dx), per thread, grown to the largest call seen; and h widened into slot's buffer (f itself
// when h is null).
float* act_buffer(int slot, int64_t n);
const float* widened(const uint16_t* h, const float* f, int slot, int64_t n);

}  // namespace fused_lora
