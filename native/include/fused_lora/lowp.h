// A frozen weight in reduced precision, and the GEMMs that read it: W (O, I) held as bfloat16, as
// int8 with one fp32 scale per output channel, or as nf4 (QLoRA's NormalFloat4 codes, two per byte,
// blocks of 64 along I with one fp32 absmax each). The products never widen W into a full-size copy:
// the blocked GEMM dequantizes each KC×NC panel as it packs it, and the decode path (M <= 8)
// dequantizes a few values at a time in registers while it streams the compressed W once.
//
// One arithmetic on every ISA: activations are rounded to bf16 as they are packed, the weight's
// values (dequantized in fp32: q·scale, code·absmax) are rounded to bf16, and their products are
// summed in fp32. A product of two bf16 values is exact in fp32, so the ISAs differ only in the
// order of the sums (and, for the two bf16 dot products, in flushing fp32 denormals to zero): the amx
// kernel (AMX-BF16 tiles, 32 k per tdpbf16ps), the avx512bf16 kernel (vdpbf16ps, two k per
// instruction), and the AVX-512F, AVX2 and portable kernels, which widen the bf16 values to fp32 and
// run the fp32 micro-kernels.
//
// One exception, which rounds less: int8 and nf4 W in the decode path (x·Ŵᵀ, M <= 8) where that
// path runs vdpbf16ps and the CPU has AVX512-VNNI (lowp_quant_decode_name() "vnni"). There decode is
// bound by the instructions that turn codes into bf16, not by W's bytes, and VNNI multiplies
// integers as they are: each row of x is split into s·(q1 + q2/256), s = max|x|/127, q1 and q2 int8
// (an error of at most s/512 per value, where bf16 rounds |x|·2^-9). int8: the sums Σ q1·q and
// Σ q2·q are exact in int32 and y = scale·s·(Σ q1·q + Σ q2·q / 256) in fp32, Ŵ = q·scale unrounded.
// nf4: the code book is held as round(code·16383) (within 3.1e-5 of each code), each block's sum of
// those against 256·q1 + q2 is exact in int32, and the blocks' sums are scaled by their absmax and
// summed in fp32. A row of x with a NaN or an infinity, or whose largest value is below 2^-100 (but
// not zero), and int8 with I > 65536, send the call to the bf16 arithmetic above.
#pragma once
#include <cstdint>
#include <string>

namespace fused_lora {

enum class WFormat : uint8_t { F32, BF16, Int8, NF4 };

constexpr int64_t kNf4Block = 64;  // nf4: values per absmax, along I (I must be a multiple)

// The NormalFloat4 code book (QLoRA, appendix E; bitsandbytes' NF4 table): the 16 quantiles of
// N(0, 1) normalised to [-1, 1], with an exact zero.
extern const float kNf4Codes[16];

// W (O, I) row-major in one of the formats; row o, column i.
//   BF16: bf16[o*I + i]
//   Int8: q8[o*I + i] · scale[o]                       (per-output-channel absmax / 127)
//   NF4:  kNf4Codes[nibble(o*I + i)] · absmax[(o*I + i) / 64], element e in byte e/2, the even
//         element in the high nibble (bitsandbytes' packing)
struct FrozenW {
  WFormat format = WFormat::F32;
  int64_t O = 0, I = 0;
  const float* f32 = nullptr;
  const uint16_t* bf16 = nullptr;
  const int8_t* q8 = nullptr;
  const float* scale = nullptr;   // (O)
  const uint8_t* q4 = nullptr;    // (O·I / 2)
  const float* absmax = nullptr;  // (O·I / 64)
  // Rows [o0, o1) as a FrozenW of their own (nf4 rows start on a block: I % 64 == 0).
  FrozenW rows(int64_t o0, int64_t o1) const;
  // Bytes the weight occupies (codes and scales).
  int64_t resident_bytes() const;
};

// C (M, O) = alpha·bf16(A)·Ŵᵀ + beta·C, A (M, I) with leading dimension lda (the forward, x·Wᵀ).
void wgemm_nt(int64_t M, float alpha, const float* A, int64_t lda, const FrozenW& W, float beta, float* C,
              int64_t ldc);
// C (M, I) = alpha·bf16(A)·Ŵ + beta·C, A (M, O) (dx = dy·W).
void wgemm_nn(int64_t M, float alpha, const float* A, int64_t lda, const FrozenW& W, float beta, float* C,
              int64_t ldc);
// Ŵ: the weight's values as the GEMMs use them (dequantized, rounded to bf16), rows [o0, o1) into
// out ((o1 − o0), I). For tests and hostView; the GEMMs never call it.
void dequantize_rows(const FrozenW& W, int64_t o0, int64_t o1, float* out);

// From fp32: int8 with scale[o] = max|W[o, :]| / 127 (1 for an all-zero row), q = round(w / scale);
// nf4 with absmax per block of 64 (1 for an all-zero block), the nearest code (ties to the lower).
void quantize_int8(const float* W, int64_t O, int64_t I, int8_t* q, float* scale);
void quantize_nf4(const float* W, int64_t n, uint8_t* q, float* absmax);

// bf16 ↔ fp32 over n elements, parallel. Rounding is to nearest even; a NaN stays a quiet NaN.
void f32_to_bf16(const float* src, uint16_t* dst, int64_t n);
void bf16_to_f32(const uint16_t* src, float* dst, int64_t n);

inline uint16_t bf16_round(float v) {
  uint32_t b;
  __builtin_memcpy(&b, &v, 4);
  if ((b & 0x7fffffffu) > 0x7f800000u) return uint16_t((b >> 16) | 0x40u);
  return uint16_t((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}
inline float bf16_value(uint16_t h) {
  const uint32_t b = uint32_t(h) << 16;
  float v;
  __builtin_memcpy(&v, &b, 4);
  return v;
}

// The decode path's row limit, for the tests.
constexpr int64_t kLowpDecodeMaxRows = 8;

// The micro-kernel family the GEMMs above run: "amx" (AMX-BF16 tiles), "avx512bf16" (vdpbf16ps on
// bf16 k-pairs) or the name of the fp32 kernels' ISA (isa.h), widening bf16; and why
// (FUSED_LORA_ISA, the CPU, or a timing). The decode path (M <= 8) runs vdpbf16ps wherever the
// CPU has it and FUSED_LORA_ISA allows it, else the fp32 ISA's kernels, whichever family the blocked
// GEMM runs.
const char* lowp_kernel_name();
const std::string& lowp_kernel_reason();
// int8 and nf4 weights in the decode path: "vnni" (integer dot products, where the decode path runs
// vdpbf16ps and the CPU has AVX512-VNNI) or "bf16" (the arithmetic above).
const char* lowp_quant_decode_name();

}  // namespace fused_lora
