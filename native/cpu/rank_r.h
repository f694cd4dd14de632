// The K = r product of the LoRA path, written in one pass: C (M, N) = bias + alpha·S·R, with S (M, r)
// and R (r, N) small. It is what a GEMM with K = r and beta = 0 computes, but the blocked GEMM pays
// for packing and C-tile traffic that a 16-deep product cannot amortise (the built-in kernel ran it
// at ~90 GFLOP/s, OpenBLAS at ~80-105), while this one is bound by writing C. CPU-internal.
#pragma once
#include <cstdint>

#include "fused_lora/isa.h"

namespace fused_lora {

// The tile rank_r_product computes in (rows × columns of C, accumulators held for all r steps), and
// the size of C from which its AVX-512 version streams its stores past the caches (lora_paths()
// reports both, for the tests that sweep their edges).
constexpr int kRankRTileRows = 4, kRankRTileCols = 32;
constexpr double kRankRStreamBytes = 8.0 * 1024 * 1024;

// The wrapper rank_r_product runs (chosen once, from isa()).
Isa rank_r_isa();

// C[m, n] = (bias ? bias[n] : 0) + alpha · Σ_j S[m·lds + j] · R[j·ldr + n]. C is written, never read.
void rank_r_product(int64_t M, int64_t N, int64_t r, float alpha, const float* S, int64_t lds, const float* R,
                    int64_t ldr, const float* bias, float* C, int64_t ldc);

}  // namespace fused_lora
