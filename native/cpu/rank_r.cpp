// rank_r_product (rank_r.h). Tiles of 4 rows × 32 columns: per j, two 16-wide loads of R and four
// broadcasts of S feed eight FMAs into accumulators that stay in registers for all r steps, and C
// is stored once. R (r × N, 128 KiB at r = 16, N = 2048) stays in L2 while the rows stream past.
// The tile is plain C++ on fixed-size arrays, inlined into per-ISA wrappers (AVX-512, AVX2+FMA,
// baseline) that the compiler vectorises; the addon is built without -march, so the wrapper is
// picked at run time, by the same choice as the GEMM's kernels (isa.h).
#include "rank_r.h"

#include <algorithm>
#include <cstdint>

#include "fused_lora/check.h"
#include "fused_lora/isa.h"
#include "fused_lora/threads.h"

#if defined(__x86_64__) || defined(_M_X64)
#define FL_X86 1
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12's own _mm512_undefined_ps (see builtin_gemm/simd.h)
#endif
#include <immintrin.h>
#else
#define FL_X86 0
#endif

namespace fused_lora {
namespace {

template <int MB, int NB>
inline __attribute__((always_inline)) void tile(int64_t r, float alpha, const float* S, int64_t lds, const float* R,
                                                int64_t ldr, const float* bias, float* C, int64_t ldc) {
  float acc[MB][NB] = {};
  for (int64_t j = 0; j < r; ++j) {
    const float* rj = R + j * ldr;
    for (int i = 0; i < MB; ++i) {
      const float sv = S[i * lds + j];
      for (int c = 0; c < NB; ++c) acc[i][c] += sv * rj[c];
    }
  }
  for (int i = 0; i < MB; ++i)
    for (int c = 0; c < NB; ++c) C[i * ldc + c] = (bias != nullptr ? bias[c] : 0.0f) + alpha * acc[i][c];
}

// Rows [m0, m1): full 4×32 tiles, then the column tail one column-group of 1 at a time, then rows.
inline __attribute__((always_inline)) void rows_body(int64_t m0, int64_t m1, int64_t N, int64_t r, float alpha,
                                                     const float* S, int64_t lds, const float* R, int64_t ldr,
                                                     const float* bias, float* C, int64_t ldc) {
  constexpr int MB = kRankRTileRows, NB = kRankRTileCols;
  const int64_t n_full = N / NB * NB;
  int64_t m = m0;
  for (; m + MB <= m1; m += MB) {
    for (int64_t n = 0; n < n_full; n += NB)
      tile<MB, NB>(r, alpha, S + m * lds, lds, R + n, ldr, bias ? bias + n : nullptr, C + m * ldc + n, ldc);
    for (int64_t n = n_full; n < N; ++n)
      tile<MB, 1>(r, alpha, S + m * lds, lds, R + n, ldr, bias ? bias + n : nullptr, C + m * ldc + n, ldc);
  }
  for (; m < m1; ++m) {
    for (int64_t n = 0; n < n_full; n += NB)
      tile<1, NB>(r, alpha, S + m * lds, lds, R + n, ldr, bias ? bias + n : nullptr, C + m * ldc + n, ldc);
    for (int64_t n = n_full; n < N; ++n)
      tile<1, 1>(r, alpha, S + m * lds, lds, R + n, ldr, bias ? bias + n : nullptr, C + m * ldc + n, ldc);
  }
}

using RowsFn = void (*)(int64_t, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                        const float*, float*, int64_t);

void rows_generic(int64_t m0, int64_t m1, int64_t N, int64_t r, float alpha, const float* S, int64_t lds,
                  const float* R, int64_t ldr, const float* bias, float* C, int64_t ldc) {
  rows_body(m0, m1, N, r, alpha, S, lds, R, ldr, bias, C, ldc);
}

#if FL_X86
__attribute__((target("avx512f"))) void rows_avx512(int64_t m0, int64_t m1, int64_t N, int64_t r, float alpha,
                                                    const float* S, int64_t lds, const float* R, int64_t ldr,
                                                    const float* bias, float* C, int64_t ldc) {
  rows_body(m0, m1, N, r, alpha, S, lds, R, ldr, bias, C, ldc);
}

// The same with non-temporal stores, for outputs far larger than the caches: a normal store first
// reads each line of C from memory (write-allocate), which doubles the traffic of a pass that only
// writes; streaming stores skip that read. They need 64-byte aligned addresses, so each row's first
// `peel` columns (the same for every row: the caller checks ldc % 16 == 0) go through the plain
// tile, then 4×32 tiles are streamed, then the last columns are stored with a mask.
static_assert(kRankRTileRows == 4 && kRankRTileCols == 32, "rows_avx512_stream is written for 4x32 tiles");
__attribute__((target("avx512f"))) void rows_avx512_stream(int64_t m0, int64_t m1, int64_t N, int64_t r, float alpha,
                                                           const float* S, int64_t lds, const float* R, int64_t ldr,
                                                           const float* bias, float* C, int64_t ldc) {
  const int64_t peel = std::min<int64_t>(N, ((64 - (reinterpret_cast<uintptr_t>(C) & 63)) & 63) / 4);
  const int64_t n_end = peel + (N - peel) / 32 * 32;
  const __m512 va = _mm512_set1_ps(alpha);
  for (int64_t m = m0; m < m1; m += 4) {
    const int rows = int(std::min<int64_t>(4, m1 - m));
    const float* Sm = S + m * lds;
    float* Cm = C + m * ldc;
    for (int i = 0; i < rows; ++i)
      for (int64_t n = 0; n < peel; ++n) tile<1, 1>(r, alpha, Sm + i * lds, lds, R + n, ldr, bias ? bias + n : nullptr, Cm + i * ldc + n, ldc);
    for (int64_t n = peel; n < n_end; n += 32) {
      __m512 acc[4][2];
      for (int i = 0; i < 4; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
      for (int64_t j = 0; j < r; ++j) {
        const __m512 b0 = _mm512_loadu_ps(R + j * ldr + n), b1 = _mm512_loadu_ps(R + j * ldr + n + 16);
        for (int i = 0; i < 4; ++i) {
          if (i >= rows) break;
          const __m512 sv = _mm512_set1_ps(Sm[i * lds + j]);
          acc[i][0] = _mm512_fmadd_ps(sv, b0, acc[i][0]);
          acc[i][1] = _mm512_fmadd_ps(sv, b1, acc[i][1]);
        }
      }
      const __m512 bias0 = bias ? _mm512_loadu_ps(bias + n) : _mm512_setzero_ps();
      const __m512 bias1 = bias ? _mm512_loadu_ps(bias + n + 16) : _mm512_setzero_ps();
      for (int i = 0; i < rows; ++i) {
        FL_DCHECK(reinterpret_cast<uintptr_t>(Cm + i * ldc + n) % 64 == 0);  // streaming stores fault otherwise
        _mm512_stream_ps(Cm + i * ldc + n, _mm512_fmadd_ps(acc[i][0], va, bias0));
        _mm512_stream_ps(Cm + i * ldc + n + 16, _mm512_fmadd_ps(acc[i][1], va, bias1));
      }
    }
    for (int64_t n = n_end; n < N; n += 16) {
      const __mmask16 mask = static_cast<__mmask16>(N - n >= 16 ? 0xFFFF : (1u << (N - n)) - 1u);
      for (int i = 0; i < rows; ++i) {
        __m512 acc = _mm512_setzero_ps();
        for (int64_t j = 0; j < r; ++j)
          acc = _mm512_fmadd_ps(_mm512_set1_ps(Sm[i * lds + j]), _mm512_maskz_loadu_ps(mask, R + j * ldr + n), acc);
        const __m512 bv = bias ? _mm512_maskz_loadu_ps(mask, bias + n) : _mm512_setzero_ps();
        _mm512_mask_storeu_ps(Cm + i * ldc + n, mask, _mm512_fmadd_ps(acc, va, bv));
      }
    }
  }
  _mm_sfence();  // streamed lines are visible to other threads (the GEMM after us) once this returns
}

__attribute__((target("avx2,fma"))) void rows_avx2(int64_t m0, int64_t m1, int64_t N, int64_t r, float alpha,
                                                   const float* S, int64_t lds, const float* R, int64_t ldr,
                                                   const float* bias, float* C, int64_t ldc) {
  rows_body(m0, m1, N, r, alpha, S, lds, R, ldr, bias, C, ldc);
}
#endif

RowsFn pick() {
  switch (isa()) {
#if FL_X86
    case Isa::Avx512: return &rows_avx512;
    case Isa::Avx2: return &rows_avx2;
#endif
    default: return &rows_generic;
  }
}

const RowsFn& picked() {
  static const RowsFn fn = pick();
  return fn;
}

}  // namespace

Isa rank_r_isa() {
#if FL_X86
  if (picked() == &rows_avx512) return Isa::Avx512;
  if (picked() == &rows_avx2) return Isa::Avx2;
#endif
  return Isa::Generic;
}

void rank_r_product(int64_t M, int64_t N, int64_t r, float alpha, const float* S, int64_t lds, const float* R,
                    int64_t ldr, const float* bias, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  RowsFn rows = picked();
#if FL_X86
  // Stream when C is well past the last-level cache's share, so the GEMM that reads it next would
  // not have found it in cache anyway, and its rows share one alignment.
  if (rows == &rows_avx512 && ldc % 16 == 0 && reinterpret_cast<uintptr_t>(C) % 4 == 0 &&
      4.0 * double(M) * double(ldc) >= kRankRStreamBytes)
    rows = &rows_avx512_stream;
#endif
  // Threads: each must get ~1 MiB of C to write (a pool wake costs tens of µs), in blocks of tile rows.
  constexpr int64_t MB = kRankRTileRows;
  const int64_t blocks = (M + MB - 1) / MB;
  const int64_t min_blocks = std::max<int64_t>(1, (1 << 18) / std::max<int64_t>(MB * N, 1));
  parallel_for(blocks, min_blocks, [&](int64_t b0, int64_t b1) {
    rows(b0 * MB, std::min(M, b1 * MB), N, r, alpha, S, lds, R, ldr, bias, C, ldc);
  });
}

}  // namespace fused_lora
