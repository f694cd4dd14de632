// Which GEMM runs each product of the LoRA kernels (lora.cpp says why, with the measurements), shared
// by the single-adapter layer (lora.cpp) and the multi-adapter one (multi_lora.cpp), so both route
// every product the same way. CPU-internal.
#pragma once
#include <cstdint>

#include "fused_lora/gemm.h"

namespace fused_lora {

enum class Route : uint8_t { Any, Builtin };

// Frozen-size GEMMs of up to this many rows run on the built-in GEMM even beside a BLAS.
constexpr int64_t kBuiltinMaxRowsFrozen = 8;
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

}  // namespace fused_lora
