// The decode path of the reduced-precision frozen GEMM (lowp.h): C (M, O) = alpha·bf16(A)·Ŵᵀ + beta·C
// for 1 <= M <= kLowpDecodeMaxRows, threads over O. wgemm.cpp sends every NT call with few rows here.
#pragma once
#include <cstdint>

#include "fused_lora/lowp.h"
#include "wdecode.h"

namespace fused_lora {
namespace builtin {

// Which kernels run: vdpbf16ps on bf16 k-pairs (where the reduced-precision GEMM's family is the
// avx512bf16 one), or fp32 FMAs on widened values per ISA.
enum class DecodeKernel { Generic, Avx2, Avx512, Avx512Bf16 };

// Whether int8 or nf4 W (`format`) decodes on the VNNI kernels (integer dot products, their own
// rounding: lowp.h) with this decode kernel: the avx512bf16 one, on a CPU with AVX512-VNNI.
bool quant_vnni(DecodeKernel kernel, WFormat format);

// `decode` reads the rows the kernels do not decode in registers (tails, the portable kernels).
void wgemv_nt(DecodeKernel kernel, DecodeRow decode, int64_t M, float alpha, const float* A, int64_t lda,
              const FrozenW& W, float beta, float* C, int64_t ldc);

}  // namespace builtin
}  // namespace fused_lora
