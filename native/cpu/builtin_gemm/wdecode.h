// Dequantizing a run of one row of a frozen weight (lowp.h) into fp32 values rounded to bf16: what
// the reduced-precision GEMM's packers read W through, and the decode path (wgemv.cpp) for its row
// tails and on the AVX2 and portable kernels (its AVX-512 kernels dequantize in registers). Per ISA: the portable
// body (which the compiler vectorises where it can: bf16 widening, int8 scaling), and AVX2 and
// AVX-512 versions that look nf4 codes up in registers (vpermps over the 16-entry code book; two
// 8-entry halves and a blend on AVX2).
#pragma once
#include <cstdint>

#include "fused_lora/lowp.h"

namespace fused_lora {
namespace builtin {

// out[k] = Ŵ(row, c0 + k) for k < n.
using DecodeRow = void (*)(const FrozenW& W, int64_t row, int64_t c0, int64_t n, float* out);

void decode_row_generic(const FrozenW& W, int64_t row, int64_t c0, int64_t n, float* out);
void decode_row_avx2(const FrozenW& W, int64_t row, int64_t c0, int64_t n, float* out);
void decode_row_avx512(const FrozenW& W, int64_t row, int64_t c0, int64_t n, float* out);

// v rounded to the nearest bf16 (ties to even), as a float. Finite inputs (weights are checked).
inline float round_to_bf16(float v) {
  uint32_t b;
  __builtin_memcpy(&b, &v, 4);
  b = (b + 0x7fffu + ((b >> 16) & 1u)) & 0xffff0000u;
  __builtin_memcpy(&v, &b, 4);
  return v;
}

}  // namespace builtin
}  // namespace fused_lora
