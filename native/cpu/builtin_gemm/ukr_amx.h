// The AMX-BF16 micro-kernel (wgemm.cpp instantiates it). A tile is up to 16 rows of 64 bytes;
// tdpbf16ps takes a 16 × 16-word tile of A (16 rows, 32 k as k-pairs), a 16 × 16-word tile of B (16
// k-pairs, 16 columns: word (p, j) = (b(2p, j), b(2p+1, j)), as ukr_bf16.h's slivers hold them) and
// adds their product into a 16 × 16 fp32 tile of C: 8192 multiply-adds per instruction, against 32
// for a zmm vdpbf16ps. Eight tiles: four of C (a 32 × 32 block, or 16 × 32 where MT = 1), two of A,
// two of B; per 32 k four loads and four products.
//
// Operands: A's sliver row-major, 32 (MT = 2) or 16 rows of kd words (kd a multiple of 16, zero
// beyond the data); B's sliver kd rows of 32 words, as the vdpbf16ps family packs it with its depth
// padded the same way. The tile configuration is loaded by amx_begin() on the calling thread before
// the first call and released by amx_end() after the last (wgemm_serial brackets its loop nest).
#pragma once
#include <cstdint>
#include <cstring>

#include "simd.h"

#if FL_X86
namespace fused_lora {
namespace builtin {

struct alignas(64) AmxConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Palette 1, tiles 0-7 of 16 rows × 64 bytes. A constant in memory: GCC's ldtilecfg operand covers
// only part of the 64 bytes, so a configuration built on the stack loses its stores to the optimiser.
inline constexpr AmxConfig kAmxConfig = [] {
  AmxConfig cfg;
  for (int t = 0; t < 8; ++t) cfg.rows[t] = 16, cfg.colsb[t] = 64;
  return cfg;
}();

__attribute__((target("amx-tile"))) inline void amx_begin() { _tile_loadconfig(&kAmxConfig); }

__attribute__((target("amx-tile"))) inline void amx_end() { _tile_release(); }

// C[0:16·MT, 0:32] = alpha·A·B + beta·C. With alpha = 1 and beta 0 or 1 (every GEMM of the layers)
// the tiles start from zero or from C and are stored straight back; otherwise through a block here.
template <int MT>
__attribute__((target("amx-tile,amx-bf16,avx512f"))) void ukr_amx(int64_t kd, const uint32_t* __restrict a,
                                                                 const uint32_t* __restrict b, float* c, int64_t ldc,
                                                                 float alpha, float beta) {
  const bool direct = alpha == 1.f && (beta == 0.f || beta == 1.f);
  const int64_t ldcb = direct ? ldc * 4 : 128;
  alignas(64) float block[32 * 32];
  float* out = direct ? c : block;
  if (direct && beta == 1.f) {
    _tile_loadd(0, out, ldcb);
    _tile_loadd(1, out + 16, ldcb);
    if (MT == 2) {
      _tile_loadd(2, out + 16 * ldc, ldcb);
      _tile_loadd(3, out + 16 * ldc + 16, ldcb);
    }
  } else {
    _tile_zero(0);
    _tile_zero(1);
    if (MT == 2) {
      _tile_zero(2);
      _tile_zero(3);
    }
  }
  const int64_t lda = kd * 4;
  for (int64_t p = 0; p < kd; p += 16) {
    _tile_loadd(6, b + p * 32, 128);
    _tile_loadd(7, b + p * 32 + 16, 128);
    _tile_loadd(4, a + p, lda);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    if (MT == 2) {
      _tile_loadd(5, a + 16 * kd + p, lda);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
  }
  const int64_t ld = direct ? ldc : 32;
  _tile_stored(0, out, ldcb);
  _tile_stored(1, out + 16, ldcb);
  if (MT == 2) {
    _tile_stored(2, out + 16 * ld, ldcb);
    _tile_stored(3, out + 16 * ld + 16, ldcb);
  }
  if (direct) return;
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  for (int i = 0; i < 16 * MT; ++i)
    for (int j = 0; j < 32; j += 16) {
      float* p = c + i * ldc + j;
      const __m512 s = _mm512_mul_ps(va, _mm512_load_ps(block + i * 32 + j));
      _mm512_storeu_ps(p, beta == 0.f ? s : _mm512_fmadd_ps(vb, _mm512_loadu_ps(p), s));
    }
}

}  // namespace builtin
}  // namespace fused_lora
#endif  // FL_X86
