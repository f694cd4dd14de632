// GEMV: y[n*ys] = alpha * sum_k x[k]·W(n, k) + beta * y[n*ys], for n in [n0, n1).
//   rows layout: W(n, k) = W[n*ldw + k]  (dot products; M == 1 with B transposed, the nn.Linear case)
//   cols layout: W(n, k) = W[k*ldw + n]  (row axpys)
// and the same rows-layout product for a few rows of x at once (gemv_multi, M <= kGemvMaxRows).
// Memory-bound: the point is to read W exactly once, in long sequential runs, on all cores. The
// bodies are plain C++ written as fixed-width lane arrays, inlined into per-ISA wrappers so the
// compiler vectorises them for AVX-512 / AVX2 / the baseline.
#pragma once
#include <cstdint>

#include "kernels.h"

namespace fused_lora {
namespace builtin {

// The per-ISA kernels over outputs [n0, n1) (GemvRows, GemvCols of kernels.h); the AVX ones exist on x86-64 only.
void gemv_rows_generic(int64_t n0, int64_t n1, int64_t K, float alpha, const float* x, const float* W,
                       int64_t ldw, float beta, float* y, int64_t ys);
void gemv_cols_generic(int64_t n0, int64_t n1, int64_t K, float alpha, const float* x, const float* W,
                       int64_t ldw, float beta, float* y, int64_t ys, float* acc);
void gemv_rows_avx512(int64_t n0, int64_t n1, int64_t K, float alpha, const float* x, const float* W, int64_t ldw,
                      float beta, float* y, int64_t ys);
void gemv_cols_avx512(int64_t n0, int64_t n1, int64_t K, float alpha, const float* x, const float* W, int64_t ldw,
                      float beta, float* y, int64_t ys, float* acc);
void gemv_multi_generic(int64_t n0, int64_t n1, int64_t M, int64_t K, float alpha, const float* x, int64_t ldx,
                        const float* W, int64_t ldw, float beta, float* y, int64_t ldy);
void gemv_multi_avx512(int64_t n0, int64_t n1, int64_t M, int64_t K, float alpha, const float* x, int64_t ldx,
                       const float* W, int64_t ldw, float beta, float* y, int64_t ldy);
void gemv_multi_avx2(int64_t n0, int64_t n1, int64_t M, int64_t K, float alpha, const float* x, int64_t ldx,
                     const float* W, int64_t ldw, float beta, float* y, int64_t ldy);
void gemv_rows_avx2(int64_t n0, int64_t n1, int64_t K, float alpha, const float* x, const float* W, int64_t ldw,
                    float beta, float* y, int64_t ys);
void gemv_cols_avx2(int64_t n0, int64_t n1, int64_t K, float alpha, const float* x, const float* W, int64_t ldw,
                    float beta, float* y, int64_t ys, float* acc);

// y = alpha·W·x + beta·y over n outputs; x is K values with stride xs.
void gemv(const KernelSet& ks, bool rows_layout, int64_t threads, int64_t n, int64_t K, float alpha, const float* x,
          int64_t xs, const float* W, int64_t ldw, float beta, float* y, int64_t ys);

// Y (M×n) = alpha·X·Wᵀ + beta·Y, 2 <= M <= kGemvMaxRows: X (M×K, rows ldx apart), W(n, k) = W[n*ldw + k],
// Y rows ldy apart. Each W row is read once for all M rows of X.
void gemv_multi(const KernelSet& ks, int64_t threads, int64_t M, int64_t n, int64_t K, float alpha, const float* x,
                int64_t ldx, const float* W, int64_t ldw, float beta, float* y, int64_t ldy);

}  // namespace builtin
}  // namespace fused_lora
