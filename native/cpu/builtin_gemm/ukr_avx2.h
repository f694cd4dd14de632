// The AVX2+FMA micro-kernel (kernels.cpp instantiates its tile shapes).
#pragma once
#include <cstdint>

#include "simd.h"

#if FL_X86
namespace fused_lora {
namespace builtin {

// AVX2+FMA: same scheme on 16 ymm registers, MR·NV ≤ 12 accumulators.
template <int MR, int NV>
__attribute__((target("avx2,fma"))) void ukr_avx2(int64_t kc, const float* __restrict a, int64_t as,
                                                  const float* __restrict b, int64_t bs, float* c,
                                                  int64_t ldc, float alpha, float beta) {
  __m256 acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) acc[i][j] = _mm256_setzero_ps();

#pragma GCC unroll 2
  for (int64_t k = 0; k < kc; ++k) {
    __m256 bv[NV];
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) bv[j] = _mm256_loadu_ps(b + 8 * j);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const __m256 av = _mm256_broadcast_ss(a + i);
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[i][j] = _mm256_fmadd_ps(av, bv[j], acc[i][j]);
    }
    a += as;
    b += bs;
  }

  const __m256 va = _mm256_set1_ps(alpha);
  if (beta == 0.f) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) _mm256_storeu_ps(c + i * ldc + 8 * j, _mm256_mul_ps(va, acc[i][j]));
  } else {
    const __m256 vb = _mm256_set1_ps(beta);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) {
        float* p = c + i * ldc + 8 * j;
        _mm256_storeu_ps(p, _mm256_fmadd_ps(va, acc[i][j], _mm256_mul_ps(vb, _mm256_loadu_ps(p))));
      }
  }
}

}  // namespace builtin
}  // namespace fused_lora
#endif  // FL_X86
