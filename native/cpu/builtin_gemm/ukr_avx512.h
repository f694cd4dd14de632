// The AVX-512F micro-kernel (kernels.cpp instantiates its tile shapes). A bf16 micro-kernel
// (vdpbf16ps) goes beside it here: kernels.h says how it plugs in.
#pragma once
#include <cstdint>

#include "simd.h"

#if FL_X86
namespace fused_lora {
namespace builtin {

// AVX-512: MR×(16·NV) accumulators held in zmm registers for the whole K loop. Per k: NV loads of
// B, MR broadcasts of A (each feeding NV FMAs), MR·NV FMAs.
// PFB: B is read in place (direct_b in gemm_serial), its rows ldb apart; that stride defeats the
// hardware prefetchers (each row is a new page for ldb >= 1024), so the rows ~16 k-steps ahead
// (about a memory latency at 24-28 FMAs per step) are prefetched explicitly.
// PACK: B is read in place as for PFB and each k row of the sliver is also stored to bp, packed,
// so the micro-kernels after this one read the sliver from L1/L2 (the driver's lazy_b, dy·W form):
// the strided read of W then overlaps this kernel's FMAs instead of running as a pass of its own.
template <int MR, int NV, bool PFB, bool PACK>
__attribute__((target("avx512f"), always_inline)) inline void ukr_avx512_body(
    int64_t kc, const float* __restrict a, int64_t as, const float* __restrict b, int64_t bs,
    float* __restrict bp, float* c, int64_t ldc, float alpha, float beta) {
  __m512 acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_setzero_ps();

  // Pull the C tile towards L1 while the K loop runs, so the final read-modify-write does not stall.
  if (beta != 0.f) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
  }

#pragma GCC unroll 2
  for (int64_t k = 0; k < kc; ++k) {
    __m512 bv[NV];
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) bv[j] = _mm512_loadu_ps(b + 16 * j);
    if (PACK) {
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) _mm512_storeu_ps(bp + 16 * j, bv[j]);
      bp += 16 * NV;
    }
    if (PFB) {
      const float* pf = b + 16 * bs;
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) _mm_prefetch(reinterpret_cast<const char*>(pf + 16 * j), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(pf + 16 * NV - 1), _MM_HINT_T0);
    }
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const __m512 av = _mm512_set1_ps(a[i]);
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_fmadd_ps(av, bv[j], acc[i][j]);
    }
    a += as;
    b += bs;
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

template <int MR, int NV, bool PFB = false>
__attribute__((target("avx512f"))) void ukr_avx512(int64_t kc, const float* __restrict a, int64_t as,
                                                   const float* __restrict b, int64_t bs, float* c,
                                                   int64_t ldc, float alpha, float beta) {
  ukr_avx512_body<MR, NV, PFB, false>(kc, a, as, b, bs, nullptr, c, ldc, alpha, beta);
}

template <int MR, int NV>
__attribute__((target("avx512f"))) void ukr_avx512_pack_b(int64_t kc, const float* __restrict a, int64_t as,
                                                          const float* __restrict b, int64_t bs, float* bp,
                                                          float* c, int64_t ldc, float alpha, float beta) {
  ukr_avx512_body<MR, NV, true, true>(kc, a, as, b, bs, bp, c, ldc, alpha, beta);
}

}  // namespace builtin
}  // namespace fused_lora
#endif  // FL_X86
