// Micro-kernels: C[0:MR, 0:NR] = alpha * Apacked·Bpacked + beta * C (beta == 0: C is not read).
// One header per ISA, each a template over the tile shape; kernels.cpp instantiates the shapes of
// its kernel sets (the only file that includes these).
#pragma once
#include <cstdint>

namespace fused_lora {
namespace builtin {

// Portable: the inner j loop is a fixed-length vector op the compiler maps onto the baseline ISA.
template <int MR, int NR>
void ukr_generic(int64_t kc, const float* __restrict a, int64_t as, const float* __restrict b, int64_t bs,
                 float* c, int64_t ldc, float alpha, float beta) {
  float acc[MR][NR] = {};
  for (int64_t k = 0; k < kc; ++k) {
    for (int i = 0; i < MR; ++i) {
      const float av = a[i];
      for (int j = 0; j < NR; ++j) acc[i][j] += av * b[j];
    }
    a += as;
    b += bs;
  }
  for (int i = 0; i < MR; ++i) {
    float* ci = c + i * ldc;
    if (beta == 0.f) {
      for (int j = 0; j < NR; ++j) ci[j] = alpha * acc[i][j];
    } else {
      for (int j = 0; j < NR; ++j) ci[j] = alpha * acc[i][j] + beta * ci[j];
    }
  }
}

}  // namespace builtin
}  // namespace fused_lora
