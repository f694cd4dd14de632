// Quantizing a frozen weight (int8 per output channel, nf4 per block of 64) and the bf16 conversions
// of tensors; the formats are those of fused_lora/lowp.h. Each runs once per weight or per tensor
// conversion, in parallel over rows or blocks.
#include <algorithm>
#include <cmath>

#include "builtin_gemm/simd.h"
#include "fused_lora/isa.h"
#include "fused_lora/lowp.h"
#include "fused_lora/threads.h"

namespace fused_lora {

void quantize_int8(const float* W, int64_t O, int64_t I, int8_t* q, float* scale) {
  parallel_for(O, std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(I, 1)), [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) {
      const float* w = W + o * I;
      float amax = 0.f;
      for (int64_t i = 0; i < I; ++i) amax = std::max(amax, std::fabs(w[i]));
      const float s = amax > 0.f ? amax / 127.f : 1.f;
      scale[o] = s;
      for (int64_t i = 0; i < I; ++i)
        q[o * I + i] = int8_t(std::clamp(std::nearbyint(w[i] / s), -127.f, 127.f));
    }
  });
}

void quantize_nf4(const float* W, int64_t n, uint8_t* q, float* absmax) {
  // Decision points halfway between neighbouring codes, in fp32; a value on one goes to the lower code.
  float mid[15];
  for (int c = 0; c < 15; ++c) mid[c] = (kNf4Codes[c] + kNf4Codes[c + 1]) * 0.5f;
  const int64_t blocks = (n + kNf4Block - 1) / kNf4Block;
  parallel_for(blocks, 256, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t e0 = b * kNf4Block, e1 = std::min(n, e0 + kNf4Block);
      float amax = 0.f;
      for (int64_t e = e0; e < e1; ++e) amax = std::max(amax, std::fabs(W[e]));
      const float a = amax > 0.f ? amax : 1.f;
      absmax[b] = a;
      for (int64_t e = e0; e < e1; e += 2) {
        uint8_t byte = 0;
        for (int64_t h = 0; h < 2; ++h) {
          int code = 7;  // the exact zero, for the odd element past the end
          if (e + h < e1) {
            const float v = W[e + h] / a;
            code = 0;
            while (code < 15 && v > mid[code]) ++code;
          }
          byte |= uint8_t(code << (h == 0 ? 4 : 0));
        }
        q[e >> 1] = byte;
      }
    }
  });
}

// The conversions run on every bf16 layer call (x and dy widened, y and dx rounded), so they have
// vector bodies: the scalar loop's NaN branch keeps GCC from vectorising it, and at 4M values it
// took a tenth of a 2048² bf16 forward. Same bits as bf16_round / bf16_value.
namespace {

#if FL_X86
__attribute__((target("avx512f,avx512bw"))) void round_avx512(const float* src, uint16_t* dst, int64_t n) {
  const __m512i low = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1), abs = _mm512_set1_epi32(0x7fffffff);
  const __m512i inf = _mm512_set1_epi32(0x7f800000), quiet = _mm512_set1_epi32(0x40);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i b = _mm512_loadu_si512(src + i);
    const __m512i hi = _mm512_srli_epi32(b, 16);
    const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(b, low), _mm512_and_si512(hi, one)), 16);
    const __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(b, abs), inf);
    const __m512i v = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(hi, quiet));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm512_cvtepi32_epi16(v));
  }
  for (; i < n; ++i) dst[i] = bf16_round(src[i]);
}

__attribute__((target("avx512f"))) void widen_avx512(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
    _mm512_storeu_si512(dst + i, _mm512_slli_epi32(h, 16));
  }
  for (; i < n; ++i) dst[i] = bf16_value(src[i]);
}

// Eight values rounded, each in the low half of its dword.
__attribute__((target("avx2"), always_inline)) inline __m256i round8(const float* p) {
  const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i hi = _mm256_srli_epi32(b, 16);
  const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(b, _mm256_set1_epi32(0x7fff)),
                                                       _mm256_and_si256(hi, _mm256_set1_epi32(1))), 16);
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
  return _mm256_blendv_epi8(r, _mm256_or_si256(hi, _mm256_set1_epi32(0x40)), nan);
}

__attribute__((target("avx2"))) void round_avx2(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    // packus keeps each 128-bit lane's four words in place; the permute restores the order
    const __m256i w = _mm256_packus_epi32(round8(src + i), round8(src + i + 8));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_permute4x64_epi64(w, 0xd8));
  }
  for (; i < n; ++i) dst[i] = bf16_round(src[i]);
}

__attribute__((target("avx2"))) void widen_avx2(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_slli_epi32(h, 16));
  }
  for (; i < n; ++i) dst[i] = bf16_value(src[i]);
}
#endif

void round_generic(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_round(src[i]);
}
void widen_generic(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_value(src[i]);
}

template <typename S, typename D>
using Convert = void (*)(const S*, D*, int64_t);

// n elements through the ISA's body (the portable one without AVX), in parallel chunks of 64 Ki.
template <typename S, typename D>
void convert(const S* src, D* dst, int64_t n, Convert<S, D> generic, Convert<S, D> avx2, Convert<S, D> avx512) {
  Convert<S, D> f = isa() == Isa::Avx512 ? avx512 : isa() == Isa::Avx2 ? avx2 : generic;
  parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) { f(src + b, dst + b, e - b); });
}

}  // namespace

void f32_to_bf16(const float* src, uint16_t* dst, int64_t n) {
#if FL_X86
  convert<float, uint16_t>(src, dst, n, &round_generic, &round_avx2, &round_avx512);
#else
  convert<float, uint16_t>(src, dst, n, &round_generic, &round_generic, &round_generic);
#endif
}

void bf16_to_f32(const uint16_t* src, float* dst, int64_t n) {
#if FL_X86
  convert<uint16_t, float>(src, dst, n, &widen_generic, &widen_avx2, &widen_avx512);
#else
  convert<uint16_t, float>(src, dst, n, &widen_generic, &widen_generic, &widen_generic);
#endif
}

}  // namespace fused_lora
