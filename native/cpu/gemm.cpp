// sgemm(): the one entry every kernel calls. Degenerate shapes are settled here, once, so neither
// the BLAS (which rejects lda = 0 through xerbla) nor the built-in GEMM sees them.
#include <algorithm>
#include <cstring>

#include "fused_lora/blas.h"
#include "fused_lora/gemm.h"

namespace fused_lora {

void sgemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.0f) {  // C = beta·C; beta == 0 writes zeros without reading C
    for (int64_t i = 0; i < M; ++i) {
      float* c = C + i * ldc;
      if (beta == 0.0f)
        std::memset(c, 0, sizeof(float) * N);
      else if (beta != 1.0f)
        for (int64_t j = 0; j < N; ++j) c[j] *= beta;
    }
    return;
  }
  if (blas_loaded()) {
    blas_sgemm(ta == Trans::T, tb == Trans::T, int(M), int(N), int(K), alpha, A, int(std::max<int64_t>(lda, 1)), B,
               int(std::max<int64_t>(ldb, 1)), beta, C, int(std::max<int64_t>(ldc, 1)));
  } else {
    builtin::sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
}

}  // namespace fused_lora
