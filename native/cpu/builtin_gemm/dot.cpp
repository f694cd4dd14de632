#include "dot.h"

#include <algorithm>
#include <cstring>

#include "fused_lora/check.h"
#include "fused_lora/threads.h"
#include "scratch.h"
#include "simd.h"

namespace fused_lora {
namespace builtin {
namespace {

#if FL_X86
// out[j] = sum of the 16 lanes of v[j], j < 16: a transpose-and-add tree.
__attribute__((target("avx512f"))) inline __m512 hsum16(const __m512* v) {
  __m512 w[8], z[4];
  for (int p = 0; p < 8; ++p)
    w[p] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * p], v[2 * p + 1]), _mm512_unpackhi_ps(v[2 * p], v[2 * p + 1]));
  for (int q = 0; q < 4; ++q) {
    const __m512d x = _mm512_castps_pd(w[2 * q]), y = _mm512_castps_pd(w[2 * q + 1]);
    z[q] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
  }
  // z[q], lane L: partial sums over lane L of v[4q..4q+3].
  const __m512 p = _mm512_add_ps(_mm512_shuffle_f32x4(z[0], z[1], 0x44), _mm512_shuffle_f32x4(z[0], z[1], 0xEE));
  const __m512 q = _mm512_add_ps(_mm512_shuffle_f32x4(z[2], z[3], 0x44), _mm512_shuffle_f32x4(z[2], z[3], 0xEE));
  return _mm512_add_ps(_mm512_shuffle_f32x4(p, q, 0x88), _mm512_shuffle_f32x4(p, q, 0xDD));
}

// C[m0:m1, 0:n] for one thread; bt is scratch for packed Bᵀ.
__attribute__((target("avx512f"))) void gemm_dot_avx512(Trans tb, int64_t m0, int64_t m1, int64_t n,
                                                        int64_t K, float alpha, const float* A, int64_t lda,
                                                        const float* B, int64_t ldb, float beta, float* C,
                                                        int64_t ldc, float* bt) {
  const __m512 va = _mm512_set1_ps(alpha);
  for (int64_t j0 = 0; j0 < n; j0 += 16) {
    const int64_t nj = std::min<int64_t>(16, n - j0);
    const __mmask16 cmask = __mmask16((1u << nj) - 1u);
    for (int64_t p0 = 0; p0 < K; p0 += kDotKC) {
      const int64_t kc = std::min(kDotKC, K - p0);
      const int64_t kcp = (kc + 15) / 16 * 16;  // zero-padded, so the k loop has no tail
      // bt[j*kcp + k] = op(B)(p0 + k, j0 + j); rows j >= nj and k >= kc are zero.
      FL_DCHECK(kcp <= kDotKC);  // bt holds 16 rows of kDotKC
      std::memset(bt, 0, sizeof(float) * size_t(16 * kcp));
      if (tb == Trans::T) {
        for (int64_t j = 0; j < nj; ++j)
          std::memcpy(bt + j * kcp, B + (j0 + j) * ldb + p0, sizeof(float) * size_t(kc));
      } else {
        for (int64_t k = 0; k < kc; ++k) {  // row segments of B in order; 16 write streams
          const float* bk = B + (p0 + k) * ldb + j0;
          for (int64_t j = 0; j < nj; ++j) bt[j * kcp + k] = bk[j];
        }
      }
      const float bet = p0 == 0 ? beta : 1.f;
      const __m512 vb = _mm512_set1_ps(bet);
      for (int64_t i = m0; i < m1; ++i) {
        const float* a = A + i * lda + p0;
        __m512 acc[16];
        for (int j = 0; j < 16; ++j) acc[j] = _mm512_setzero_ps();
        int64_t k = 0;
        for (; k + 16 <= kc; k += 16) {
          // A arrives as kc-long pieces of rows lda apart, a pattern the hardware prefetchers pick
          // up poorly, and this loop is bound by A's bandwidth: fetch the next row's piece now.
          _mm_prefetch(reinterpret_cast<const char*>(a + lda + k), _MM_HINT_T0);
          const __m512 av = _mm512_loadu_ps(a + k);
          for (int j = 0; j < 16; ++j) acc[j] = _mm512_fmadd_ps(av, _mm512_load_ps(bt + j * kcp + k), acc[j]);
        }
        if (k < kc) {
          const __m512 av = _mm512_maskz_loadu_ps(__mmask16((1u << (kc - k)) - 1u), a + k);
          for (int j = 0; j < 16; ++j) acc[j] = _mm512_fmadd_ps(av, _mm512_load_ps(bt + j * kcp + k), acc[j]);
        }
        const __m512 sum = _mm512_mul_ps(va, hsum16(acc));
        float* c = C + i * ldc + j0;
        if (bet == 0.f)
          _mm512_mask_storeu_ps(c, cmask, sum);
        else
          _mm512_mask_storeu_ps(c, cmask, _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(cmask, c), sum));
      }
    }
  }
}
#endif

}  // namespace

void dot(int64_t threads, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
         const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
#if FL_X86
  auto rows = [&](int64_t b, int64_t e) {
    float* bt = scratch(Slot::PackB, size_t(16) * kDotKC);
    gemm_dot_avx512(tb, b, e, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bt);
  };
  if (threads <= 1)
    rows(0, M);
  else
    parallel_for(M, (M + threads - 1) / threads, rows);
#endif
}

}  // namespace builtin
}  // namespace fused_lora
