#include "pack.h"

#include <algorithm>
#include <cstring>

#include "fused_lora/check.h"
#include "kernels.h"
#include "simd.h"

namespace fused_lora {
namespace builtin {

void pack_copy(const float* s, int64_t ld, int64_t cols, int R, int64_t kc, float* d) {
  if (cols == R) {
    for (int64_t k = 0; k < kc; ++k) std::memcpy(d + k * R, s + k * ld, sizeof(float) * size_t(R));
  } else {
    for (int64_t k = 0; k < kc; ++k) {
      float* dk = d + k * R;
      const float* sk = s + k * ld;
      int64_t i = 0;
      for (; i < cols; ++i) dk[i] = sk[i];
      for (; i < R; ++i) dk[i] = 0.f;
    }
  }
}

// Transpose, portable. The R source rows are usually a power-of-two stride apart (ld = 1024, 2048,
// ...), so they all map to the same few L1 sets: walking them column by column would miss on every
// element. Instead each 16-float run (one cache line) of every row is consumed at once into a small
// staging tile, which is then written out k-major.
void pack_t_generic(const float* s, int64_t ld, int64_t rows, int R, int64_t kc, float* d) {
  constexpr int KB = 16;
  float tmp[kMaxSliver * KB];
  FL_DCHECK(R <= kMaxSliver);
  for (int64_t k0 = 0; k0 < kc; k0 += KB) {
    const int kn = int(std::min<int64_t>(KB, kc - k0));
    for (int i = 0; i < R; ++i) {
      float* t = tmp + i * KB;
      if (i < rows) {
        const float* si = s + i * ld + k0;
        for (int kk = 0; kk < kn; ++kk) t[kk] = si[kk];
      } else {
        for (int kk = 0; kk < kn; ++kk) t[kk] = 0.f;
      }
    }
    for (int kk = 0; kk < kn; ++kk) {
      float* dk = d + (k0 + kk) * R;
      for (int i = 0; i < R; ++i) dk[i] = tmp[i * KB + kk];
    }
  }
}

#if FL_X86
// Transpose, AVX-512: 16 rows × 16 k per step, one full-line load per row and an in-register 16×16
// transpose; rows past `rows` load as zero, which is the padding.
__attribute__((target("avx512f"))) void pack_t_avx512(const float* s, int64_t ld, int64_t rows, int R,
                                                      int64_t kc, float* d) {
  for (int g = 0; g < R; g += 16) {
    const int gr = std::min(16, R - g);
    const __mmask16 smask = __mmask16((1u << gr) - 1u);
    for (int64_t k0 = 0; k0 < kc; k0 += 16) {
      const int kn = int(std::min<int64_t>(16, kc - k0));
      const __mmask16 lmask = __mmask16((1u << kn) - 1u);
      __m512 r[16], t[16];
      for (int i = 0; i < 16; ++i)
        r[i] = g + i < rows ? _mm512_maskz_loadu_ps(lmask, s + (g + i) * ld + k0) : _mm512_setzero_ps();
      // 32-bit interleave within 128-bit lanes, then 64-bit, then 128-bit lane shuffles.
      for (int i = 0; i < 8; ++i) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
      }
      for (int i = 0; i < 4; ++i) {
        const __m512d t0 = _mm512_castps_pd(t[4 * i]), t1 = _mm512_castps_pd(t[4 * i + 1]);
        const __m512d t2 = _mm512_castps_pd(t[4 * i + 2]), t3 = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
      }
      // r[4q + c], lane L, holds rows 4q..4q+3 at k = 4L + c.
      for (int c = 0; c < 4; ++c) {
        const __m512 x0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x44);
        const __m512 x1 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x44);
        const __m512 y0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xEE);
        const __m512 y1 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xEE);
        t[c] = _mm512_shuffle_f32x4(x0, x1, 0x88);
        t[4 + c] = _mm512_shuffle_f32x4(x0, x1, 0xDD);
        t[8 + c] = _mm512_shuffle_f32x4(y0, y1, 0x88);
        t[12 + c] = _mm512_shuffle_f32x4(y0, y1, 0xDD);
      }
      for (int kk = 0; kk < kn; ++kk) _mm512_mask_storeu_ps(d + (k0 + kk) * R + g, smask, t[kk]);
    }
  }
}
#endif

void pack_slivers(bool copy, const float* S, int64_t ld, int64_t n, int64_t kc, int R, float* dst) {
  for (int64_t i0 = 0; i0 < n; i0 += R) {
    const int64_t valid = std::min<int64_t>(R, n - i0);
    if (copy)
      pack_copy(S + i0, ld, valid, R, kc, dst + i0 * kc);  // v(i, k) = S[k*ld + i]
    else
      pack_t()(S + i0 * ld, ld, valid, R, kc, dst + i0 * kc);  // v(i, k) = S[i*ld + k]
  }
}

}  // namespace builtin
}  // namespace fused_lora
