// Single-precision GEMM in row-major layout, the one primitive every LoRA kernel is built from.
#pragma once
#include <cstdint>

namespace fused_lora {

enum class Trans : uint8_t { N, T };

// C(M×N) = alpha · op(A)(M×K) · op(B)(K×N) + beta · C, all row-major.
//   op(A) = A (M×K, lda >= K) or Aᵀ with A stored K×M (lda >= M); likewise op(B) with ldb.
//   beta == 0 overwrites C without reading it (NaN in C does not propagate), as BLAS does.
//   M, N, K, lda, ldb, ldc must fit in int32 (checked by the caller: the addon's validation).
// Dispatches to the BLAS chosen at load time (blas.h), or to the built-in GEMM.
void sgemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

namespace builtin {
// The built-in GEMM: packed, cache-blocked, vectorised (AVX-512 / AVX2+FMA chosen at run time, a
// portable path elsewhere) and multithreaded through parallel_for. Same contract as sgemm above.
void sgemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// Which micro-kernel the built-in GEMM runs on this CPU: "avx512", "avx2", or "generic".
const char* kernel_name();
}  // namespace builtin

}  // namespace fused_lora
