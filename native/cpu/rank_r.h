// The K = r product of the LoRA path, written in one pass: C (M, N) = bias + alpha·S·R, with S (M, r)
// and R (r, N) small. It is what a GEMM with K = r and beta = 0 computes, but the blocked GEMM pays
// for packing and C-tile traffic that a 16-deep product cannot amortise (the built-in kernel ran it
// at ~90 GFLOP/s, OpenBLAS at ~80-105), while this one is bound by writing C. CPU-internal.
#pragma once
#include <cstdint>

namespace fused_lora {

// C[m, n] = (bias ? bias[n] : 0) + alpha · Σ_j S[m·lds + j] · R[j·ldr + n]. C is written, never read.
void rank_r_product(int64_t M, int64_t N, int64_t r, float alpha, const float* S, int64_t lds, const float* R,
                    int64_t ldr, const float* bias, float* C, int64_t ldc);

}  // namespace fused_lora
