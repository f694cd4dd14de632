// The avx512_bf16 micro-kernel (wgemm.cpp instantiates it). vdpbf16ps multiplies 16 pairs of bf16
// and adds both products into 16 fp32 lanes: two k per instruction where an fp32 FMA does one, for
// the same register pressure. So the slivers hold k-pairs: A's word (i, p) = (a(i, 2p), a(i, 2p+1))
// and B's word (p, j) = (b(2p, j), b(2p+1, j)), the even k in the low half, as the instruction pairs
// them. The tile is the fp32 kernel's 14×32 (28 zmm accumulators, 2 B vectors, 1 broadcast).
#pragma once
#include <cstdint>

#include "simd.h"

#if FL_X86
namespace fused_lora {
namespace builtin {

template <int MR, int NV>
__attribute__((target("avx512f,avx512bf16"))) void ukr_bf16(int64_t kp, const uint32_t* __restrict a,
                                                             const uint32_t* __restrict b, float* c,
                                                             int64_t ldc, float alpha, float beta) {
  __m512 acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_setzero_ps();
  if (beta != 0.f) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
  }
#pragma GCC unroll 2
  for (int64_t p = 0; p < kp; ++p) {
    __m512bh bv[NV];
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) bv[j] = (__m512bh)_mm512_loadu_si512(b + 16 * j);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(int(a[i]));
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], av, bv[j]);
    }
    a += MR;
    b += 16 * NV;
  }
  const __m512 va = _mm512_set1_ps(alpha);
  if (beta == 0.f) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) _mm512_storeu_ps(c + i * ldc + 16 * j, _mm512_mul_ps(va, acc[i][j]));
  } else {
    const __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) {
        float* p = c + i * ldc + 16 * j;
        _mm512_storeu_ps(p, _mm512_fmadd_ps(va, acc[i][j], _mm512_mul_ps(vb, _mm512_loadu_ps(p))));
      }
  }
}

}  // namespace builtin
}  // namespace fused_lora
#endif  // FL_X86
