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

#if FL_X86
// Transpose, AVX2: 8 rows × 8 k per step, one 32-byte load per row and an in-register 8×8
// transpose; rows past `rows` load as zero, which is the padding. The last group of a sliver of
// R % 8 != 0 rows (the 6- and 12-row A slivers) is transposed whole and only its R % 8 columns
// copied out. The portable transposer alone packed at ~1 GB/s on Zen 3 (the x·Wᵀ pack of a 4096² W: 55% of a 16-row product's time).
__attribute__((target("avx2,fma"))) void pack_t_avx2(const float* s, int64_t ld, int64_t rows, int R, int64_t kc,
                                                    float* d) {
  const int64_t K8 = kc / 8 * 8;
  for (int g = 0; g < R; g += 8) {
    const int gr = std::min(8, R - g);  // rows of this group that d holds (8, or R % 8 in the last)
    const float* src[8];
    for (int i = 0; i < 8; ++i) src[i] = i < gr && g + i < rows ? s + (g + i) * ld : nullptr;
    alignas(32) float part[8 * 8];  // a short group's transposed block, then its gr columns copied out
    for (int64_t k0 = 0; k0 < K8; k0 += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = src[i] ? _mm256_loadu_ps(src[i] + k0) : _mm256_setzero_ps();
      const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
      const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
      const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
      const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
      const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
      const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
      const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
      const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
      // u0..u3, 128-bit half h, hold rows 0..3 at k = 4h + 0..3; u4..u7 the same for rows 4..7.
      const __m256 c[8] = {_mm256_permute2f128_ps(u0, u4, 0x20), _mm256_permute2f128_ps(u1, u5, 0x20),
                           _mm256_permute2f128_ps(u2, u6, 0x20), _mm256_permute2f128_ps(u3, u7, 0x20),
                           _mm256_permute2f128_ps(u0, u4, 0x31), _mm256_permute2f128_ps(u1, u5, 0x31),
                           _mm256_permute2f128_ps(u2, u6, 0x31), _mm256_permute2f128_ps(u3, u7, 0x31)};
      float* o = d + k0 * R + g;
      if (gr == 8) {
        for (int kk = 0; kk < 8; ++kk) _mm256_storeu_ps(o + kk * R, c[kk]);
      } else {
        for (int kk = 0; kk < 8; ++kk) _mm256_store_ps(part + 8 * kk, c[kk]);
        for (int kk = 0; kk < 8; ++kk) std::memcpy(o + kk * R, part + 8 * kk, sizeof(float) * size_t(gr));
      }
    }
    for (int64_t k = K8; k < kc; ++k)
      for (int i = 0; i < gr; ++i) d[k * R + g + i] = src[i] ? src[i][k] : 0.f;
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
