// Narrow outputs from a row-major A (N <= 32, A not transposed: the LoRA down-projection
// x·Aᵀ, M×r with K = d_in). The blocked path would have to transpose all of A into MR slivers for
// only N·2 flops per element; here each C row is instead 16 dot products along K, vectorised along
// K, so A is read once, in place, in unit stride. op(B) is packed as Bᵀ: 16 rows of KC contiguous k
// (16 KiB at KC = 256, resident in L1 while the rows of A stream past it).
#pragma once
#include <cstdint>

#include "fused_lora/gemm.h"

namespace fused_lora {
namespace builtin {

constexpr int64_t kDotKC = 256;
constexpr int64_t kDotMaxN = 32;  // from 32 to 64 columns the blocked path measured level with it

// C[0:M, 0:N] = alpha·A·op(B) + beta·C on `threads` threads, A row-major (not transposed), N <= kDotMaxN.
// AVX-512 only: kernels.cpp sends nothing here on another ISA.
void dot(int64_t threads, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
         const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace builtin
}  // namespace fused_lora
