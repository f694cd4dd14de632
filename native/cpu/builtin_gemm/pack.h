// Packing. A sliver: for each k, MR consecutive values a(i, k). B sliver: for each k, NR consecutive
// values b(k, j). Slivers of one block are contiguous, each kc*MR (kc*NR) floats long. Both operands
// reduce to the same two cases: the sliver's R values for one k are contiguous in the source (a
// copy) or they are R rows of the source (a transpose).
// Packers for other formats of the frozen weight (bf16, int8 with scales, nf4 with absmax) go here,
// beside pack_b: kernels.h says how they plug in.
#pragma once
#include <cstdint>

#include "fused_lora/gemm.h"

namespace fused_lora {
namespace builtin {

// d[k*R + i] = s[k*ld + i] for i < cols, zero for cols <= i < R.
void pack_copy(const float* s, int64_t ld, int64_t cols, int R, int64_t kc, float* d);
// d[k*R + i] = s[i*ld + k] for i < rows, zero for rows <= i < R (the PackT of kernels.h), portable
// and AVX-512 (x86-64 only).
void pack_t_generic(const float* s, int64_t ld, int64_t rows, int R, int64_t kc, float* d);
void pack_t_avx2(const float* s, int64_t ld, int64_t rows, int R, int64_t kc, float* d);
void pack_t_avx512(const float* s, int64_t ld, int64_t rows, int R, int64_t kc, float* d);

// n values v(i, k) per k into R-wide slivers: v(i, k) = S[k*ld + i] when `copy`, else S[i*ld + k].
void pack_slivers(bool copy, const float* S, int64_t ld, int64_t n, int64_t kc, int R, float* dst);

// op(A)[0:m, 0:kc] into MR slivers, A already offset to (i0, p0): a(i, k) = A[k*lda + i] when
// transposed, else A[i*lda + k].
inline void pack_a(Trans ta, const float* A, int64_t lda, int64_t m, int64_t kc, int mr, float* dst) {
  pack_slivers(ta == Trans::T, A, lda, m, kc, mr, dst);
}
// op(B)[0:kc, 0:n] into NR slivers, B already offset to (p0, j0): b(k, j) = B[k*ldb + j], or
// B[j*ldb + k] when transposed.
inline void pack_b(Trans tb, const float* B, int64_t ldb, int64_t kc, int64_t n, int nr, float* dst) {
  pack_slivers(tb == Trans::N, B, ldb, n, kc, nr, dst);
}

}  // namespace builtin
}  // namespace fused_lora
