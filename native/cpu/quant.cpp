// Quantizing a frozen weight (int8 per output channel, nf4 per block of 64) and the bf16 conversions
// of tensors; the formats are those of fused_lora/lowp.h. Each runs once per weight or per tensor
// conversion, in parallel over rows or blocks.
#include <algorithm>
#include <cmath>

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

void f32_to_bf16(const float* src, uint16_t* dst, int64_t n) {
  parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dst[i] = bf16_round(src[i]);
  });
}

void bf16_to_f32(const uint16_t* src, float* dst, int64_t n) {
  parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dst[i] = bf16_value(src[i]);
  });
}

}  // namespace fused_lora
