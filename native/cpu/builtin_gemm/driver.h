// The blocked GEMM (GotoBLAS / BLIS): each thread's share of C through the loops of driver.cpp, on a
// grid of threads over C. The kernel (tile shape, blocking, micro-kernel) comes from the chosen set
// (kernels.h); plan.cpp picks the kernel and the grid.
#pragma once
#include <cstdint>

#include "fused_lora/gemm.h"
#include "kernels.h"

namespace fused_lora {
namespace builtin {

// The blocking of one thread's m×n share of C (K whole).
struct Blocking {
  int64_t MC, NC, KC;
  bool direct_a, direct_b;  // the operand is read in place, not packed
  bool lazy_b;              // B packed one sliver at a time, just before its micro-kernels (m <= MC)
};

// MC, NC, KC and which operands are read in place, for one thread's m×n share.
Blocking blocking(const Kernel& kr, Trans ta, Trans tb, int64_t m, int64_t n, int64_t K);

// Thread t's rectangle of C in a tm×tn grid of whole micro-tiles.
struct Part {
  int64_t i0, i1, j0, j1;
};

Part part_of(int64_t t, int64_t tm, int64_t tn, const Kernel& kr, int64_t M, int64_t N);

// C = alpha·op(A)·op(B) + beta·C on a tm×tn grid of threads, each running the blocked algorithm on
// its rectangle (part_of) with kernel kr.
void gemm_blocked(const Kernel& kr, int64_t tm, int64_t tn, Trans ta, Trans tb, int64_t M, int64_t N, int64_t K,
                  float alpha, const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                  int64_t ldc);

}  // namespace builtin
}  // namespace fused_lora
