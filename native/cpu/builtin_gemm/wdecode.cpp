#include "wdecode.h"

#include "simd.h"

namespace fused_lora {
namespace builtin {
namespace {

__attribute__((always_inline)) inline void decode_body(const FrozenW& W, int64_t row, int64_t c0, int64_t n,
                                                       float* __restrict out) {
  const int64_t e0 = row * W.I + c0;
  switch (W.format) {
    case WFormat::F32: {
      const float* s = W.f32 + e0;
      for (int64_t k = 0; k < n; ++k) out[k] = round_to_bf16(s[k]);
      return;
    }
    case WFormat::BF16: {
      const uint16_t* s = W.bf16 + e0;
      uint32_t* o = reinterpret_cast<uint32_t*>(out);
      for (int64_t k = 0; k < n; ++k) o[k] = uint32_t(s[k]) << 16;
      return;
    }
    case WFormat::Int8: {
      const int8_t* s = W.q8 + e0;
      const float sc = W.scale[row];
      for (int64_t k = 0; k < n; ++k) out[k] = round_to_bf16(float(s[k]) * sc);
      return;
    }
    case WFormat::NF4:
      for (int64_t k = 0; k < n; ++k) {
        const int64_t e = e0 + k;
        const uint8_t byte = W.q4[e >> 1];
        const int nib = (e & 1) ? byte & 15 : byte >> 4;
        out[k] = round_to_bf16(kNf4Codes[nib] * W.absmax[e / kNf4Block]);
      }
      return;
  }
}

}  // namespace

void decode_row_generic(const FrozenW& W, int64_t row, int64_t c0, int64_t n, float* out) {
  decode_body(W, row, c0, n, out);
}

#if FL_X86
// nf4 on AVX2, 16 values per step where they start on a 16-element boundary (inside one block):
// 8 bytes → 16 nibbles, high first → two 8-entry halves of the code book (vpermps on the low 3
// bits, vblendvps on bit 3) → × absmax → rounded to bf16. Other formats (which the compiler
// vectorises in the body) and the unaligned ends take the body.
__attribute__((target("avx2,fma"))) void decode_row_avx2(const FrozenW& W, int64_t row, int64_t c0, int64_t n,
                                                         float* out) {
  if (W.format != WFormat::NF4) {
    decode_body(W, row, c0, n, out);
    return;
  }
  const int64_t e0 = row * W.I + c0;
  int64_t k = 0;
  const int64_t head = (16 - (e0 & 15)) & 15;
  if (head > 0) {
    decode_body(W, row, c0, head < n ? head : n, out);
    k = head;
  }
  const __m256 lo_codes = _mm256_loadu_ps(kNf4Codes), hi_codes = _mm256_loadu_ps(kNf4Codes + 8);
  const __m128i low4 = _mm_set1_epi8(0x0f);
  const __m256i round = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1),
                keep = _mm256_set1_epi32(int(0xffff0000u));
  for (; k + 16 <= n; k += 16) {
    const int64_t e = e0 + k;
    const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(W.q4 + (e >> 1)));
    const __m128i nib = _mm_unpacklo_epi8(_mm_and_si128(_mm_srli_epi16(bytes, 4), low4), _mm_and_si128(bytes, low4));
    const __m256 a = _mm256_set1_ps(W.absmax[e / kNf4Block]);
    for (int h = 0; h < 2; ++h) {
      const __m256i idx = _mm256_cvtepu8_epi32(h == 0 ? nib : _mm_srli_si128(nib, 8));
      const __m256 code = _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo_codes, idx), _mm256_permutevar8x32_ps(hi_codes, idx),
                                           _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
      __m256i b = _mm256_castps_si256(_mm256_mul_ps(code, a));
      b = _mm256_and_si256(_mm256_add_epi32(_mm256_add_epi32(b, round), _mm256_and_si256(_mm256_srli_epi32(b, 16), one)), keep);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k + 8 * h), b);
    }
  }
  if (k < n) decode_body(W, row, c0 + k, n - k, out + k);
}

// nf4, 16 values per step where they start on a 16-element boundary of the flattened W (a step then
// lies inside one 64-value block): 8 bytes → 16 nibbles, high first → indices → the code book in a
// register → × absmax → rounded to bf16. Other formats and the unaligned ends take the body.
__attribute__((target("avx512f,avx512bw"))) void decode_row_avx512(const FrozenW& W, int64_t row, int64_t c0,
                                                                   int64_t n, float* out) {
  if (W.format != WFormat::NF4) {
    decode_body(W, row, c0, n, out);
    return;
  }
  const int64_t e0 = row * W.I + c0;
  int64_t k = 0;
  const int64_t head = (16 - (e0 & 15)) & 15;
  if (head > 0) {
    decode_body(W, row, c0, head < n ? head : n, out);
    k = head;
  }
  const __m512 codes = _mm512_loadu_ps(kNf4Codes);
  const __m128i low4 = _mm_set1_epi8(0x0f);
  const __m512i round = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1),
                keep = _mm512_set1_epi32(int(0xffff0000u));
  for (; k + 16 <= n; k += 16) {
    const int64_t e = e0 + k;
    const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(W.q4 + (e >> 1)));
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), low4), lo = _mm_and_si128(bytes, low4);
    const __m512i idx = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(hi, lo));
    const __m512 v = _mm512_mul_ps(_mm512_permutexvar_ps(idx, codes), _mm512_set1_ps(W.absmax[e / kNf4Block]));
    __m512i b = _mm512_castps_si512(v);
    b = _mm512_and_si512(_mm512_add_epi32(_mm512_add_epi32(b, round), _mm512_and_si512(_mm512_srli_epi32(b, 16), one)), keep);
    _mm512_storeu_si512(out + k, b);
  }
  if (k < n) decode_body(W, row, c0 + k, n - k, out + k);
}
#else
void decode_row_avx2(const FrozenW& W, int64_t row, int64_t c0, int64_t n, float* out) {
  decode_body(W, row, c0, n, out);
}
void decode_row_avx512(const FrozenW& W, int64_t row, int64_t c0, int64_t n, float* out) {
  decode_body(W, row, c0, n, out);
}
#endif

}  // namespace builtin
}  // namespace fused_lora
