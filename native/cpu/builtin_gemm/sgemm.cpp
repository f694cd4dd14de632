// The built-in SGEMM: the fallback when no BLAS library can be loaded (see blas.h), and the reason
// the addon still runs at a useful fraction of OpenBLAS speed on a machine without one; the LoRA
// kernels also call it for the shapes it runs faster than a BLAS (native/cpu/lora.cpp).
//
// plan.cpp decides the path, kernel, blocking and threads of a call; this file runs exactly that
// plan: C scaled only (K = 0 or alpha = 0), a GEMV (M == 1 or N == 1, the LoRA decode case: no
// packing, the matrix streamed once, gemv.cpp; and 2..kGemvMaxRows rows of A against a transposed B,
// the same stream shared by those rows), the dot path (narrow outputs of a row-major A,
// dot.cpp), or the blocked algorithm (driver.cpp) over packed slivers (pack.cpp) with the
// micro-kernels of the ISA chosen at run time (kernels.cpp, ukr_*.h; the addon is built without
// -march).
#include <cstring>

#include "dot.h"
#include "driver.h"
#include "gemv.h"
#include "kernels.h"
#include "plan.h"

namespace fused_lora {
namespace builtin {
namespace {

// C = beta·C (beta == 0: zero, without reading C).
void scale_c(int64_t M, int64_t N, float beta, float* C, int64_t ldc) {
  if (beta == 1.f) return;
  for (int64_t i = 0; i < M; ++i) {
    float* c = C + i * ldc;
    if (beta == 0.f) {
      std::memset(c, 0, sizeof(float) * size_t(N));
    } else {
      for (int64_t j = 0; j < N; ++j) c[j] *= beta;
    }
  }
}

}  // namespace

void sgemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const KernelSet& ks = kernels();
  const Plan p = plan_call(ks, ta, tb, M, N, K, alpha);
  switch (p.path) {
    case Path::None:
      return;
    case Path::Scale:
      scale_c(M, N, beta, C, ldc);
      return;
    case Path::GemvRows:
    case Path::GemvCols:
      if (M == 1)  // x = op(A) row 0
        gemv(ks, p.path == Path::GemvRows, p.threads, N, K, alpha, A, ta == Trans::N ? 1 : lda, B, ldb, beta, C, 1);
      else  // x = op(B) column 0; y is a strided column of C
        gemv(ks, p.path == Path::GemvRows, p.threads, M, K, alpha, B, tb == Trans::N ? ldb : 1, A, lda, beta, C, ldc);
      return;
    case Path::GemvMulti:  // x = the M rows of A, W = B's rows
      gemv_multi(ks, p.threads, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
      return;
    case Path::Dot:
      dot(p.threads, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
      return;
    case Path::Blocked:
      break;
  }

  gemm_blocked(ks.k[p.kernel], p.tm, p.tn, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace builtin
}  // namespace fused_lora
