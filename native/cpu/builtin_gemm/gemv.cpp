#include "gemv.h"

#include <algorithm>

#include "fused_lora/threads.h"
#include "scratch.h"
#include "simd.h"

namespace fused_lora {
namespace builtin {
namespace {

inline float finish(float acc, float alpha, float beta, const float* y) {
  return beta == 0.f ? alpha * acc : alpha * acc + beta * *y;
}

template <int L>
__attribute__((always_inline)) inline void gemv_rows_body(int64_t n0, int64_t n1, int64_t K, float alpha,
                                                           const float* __restrict x, const float* W,
                                                           int64_t ldw, float beta, float* y, int64_t ys) {
  int64_t n = n0;
  // Four rows at a time: four independent sequential streams, x reloaded once per four rows.
  for (; n + 4 <= n1; n += 4) {
    const float* w0 = W + n * ldw;
    const float* w1 = w0 + ldw;
    const float* w2 = w1 + ldw;
    const float* w3 = w2 + ldw;
    float a0[L] = {}, a1[L] = {}, a2[L] = {}, a3[L] = {};
    int64_t k = 0;
    for (; k + L <= K; k += L) {
      for (int l = 0; l < L; ++l) {
        const float xv = x[k + l];
        a0[l] += xv * w0[k + l];
        a1[l] += xv * w1[k + l];
        a2[l] += xv * w2[k + l];
        a3[l] += xv * w3[k + l];
      }
    }
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int l = 0; l < L; ++l) {
      s0 += a0[l];
      s1 += a1[l];
      s2 += a2[l];
      s3 += a3[l];
    }
    for (; k < K; ++k) {
      s0 += x[k] * w0[k];
      s1 += x[k] * w1[k];
      s2 += x[k] * w2[k];
      s3 += x[k] * w3[k];
    }
    y[(n + 0) * ys] = finish(s0, alpha, beta, y + (n + 0) * ys);
    y[(n + 1) * ys] = finish(s1, alpha, beta, y + (n + 1) * ys);
    y[(n + 2) * ys] = finish(s2, alpha, beta, y + (n + 2) * ys);
    y[(n + 3) * ys] = finish(s3, alpha, beta, y + (n + 3) * ys);
  }
  for (; n < n1; ++n) {
    const float* w0 = W + n * ldw;
    float a0[L] = {};
    int64_t k = 0;
    for (; k + L <= K; k += L)
      for (int l = 0; l < L; ++l) a0[l] += x[k + l] * w0[k + l];
    float s0 = 0;
    for (int l = 0; l < L; ++l) s0 += a0[l];
    for (; k < K; ++k) s0 += x[k] * w0[k];
    y[n * ys] = finish(s0, alpha, beta, y + n * ys);
  }
}

__attribute__((always_inline)) inline void gemv_cols_body(int64_t n0, int64_t n1, int64_t K, float alpha,
                                                          const float* __restrict x, const float* W,
                                                          int64_t ldw, float beta, float* y, int64_t ys,
                                                          float* __restrict acc) {
  // acc[0:n1-n0] accumulates sum_k x[k]·W[k, n0:n1]; four W rows per pass, so acc is loaded and
  // stored once per four rows while W is read in sequential row segments.
  const int64_t len = n1 - n0;
  for (int64_t j = 0; j < len; ++j) acc[j] = 0.f;
  int64_t k = 0;
  for (; k + 4 <= K; k += 4) {
    const float x0 = x[k], x1 = x[k + 1], x2 = x[k + 2], x3 = x[k + 3];
    const float* __restrict w0 = W + k * ldw + n0;
    const float* __restrict w1 = w0 + ldw;
    const float* __restrict w2 = w1 + ldw;
    const float* __restrict w3 = w2 + ldw;
    for (int64_t j = 0; j < len; ++j) acc[j] += x0 * w0[j] + x1 * w1[j] + x2 * w2[j] + x3 * w3[j];
  }
  for (; k < K; ++k) {
    const float x0 = x[k];
    const float* __restrict w0 = W + k * ldw + n0;
    for (int64_t j = 0; j < len; ++j) acc[j] += x0 * w0[j];
  }
  for (int64_t j = 0; j < len; ++j) y[(n0 + j) * ys] = finish(acc[j], alpha, beta, y + (n0 + j) * ys);
}

}  // namespace

void gemv_rows_generic(int64_t n0, int64_t n1, int64_t K, float alpha, const float* x, const float* W,
                       int64_t ldw, float beta, float* y, int64_t ys) {
  gemv_rows_body<8>(n0, n1, K, alpha, x, W, ldw, beta, y, ys);
}
void gemv_cols_generic(int64_t n0, int64_t n1, int64_t K, float alpha, const float* x, const float* W,
                       int64_t ldw, float beta, float* y, int64_t ys, float* acc) {
  gemv_cols_body(n0, n1, K, alpha, x, W, ldw, beta, y, ys, acc);
}
#if FL_X86
__attribute__((target("avx512f"))) void gemv_rows_avx512(int64_t n0, int64_t n1, int64_t K, float alpha,
                                                         const float* x, const float* W, int64_t ldw,
                                                         float beta, float* y, int64_t ys) {
  gemv_rows_body<32>(n0, n1, K, alpha, x, W, ldw, beta, y, ys);
}
__attribute__((target("avx512f"))) void gemv_cols_avx512(int64_t n0, int64_t n1, int64_t K, float alpha,
                                                         const float* x, const float* W, int64_t ldw,
                                                         float beta, float* y, int64_t ys, float* acc) {
  gemv_cols_body(n0, n1, K, alpha, x, W, ldw, beta, y, ys, acc);
}
__attribute__((target("avx2,fma"))) void gemv_rows_avx2(int64_t n0, int64_t n1, int64_t K, float alpha,
                                                        const float* x, const float* W, int64_t ldw,
                                                        float beta, float* y, int64_t ys) {
  gemv_rows_body<16>(n0, n1, K, alpha, x, W, ldw, beta, y, ys);
}
__attribute__((target("avx2,fma"))) void gemv_cols_avx2(int64_t n0, int64_t n1, int64_t K, float alpha,
                                                        const float* x, const float* W, int64_t ldw,
                                                        float beta, float* y, int64_t ys, float* acc) {
  gemv_cols_body(n0, n1, K, alpha, x, W, ldw, beta, y, ys, acc);
}
#endif

// y = alpha·W·x + beta·y over n outputs; x is K values with stride xs.
void gemv(const KernelSet& ks, bool rows_layout, int64_t threads, int64_t n, int64_t K, float alpha, const float* x,
          int64_t xs, const float* W, int64_t ldw, float beta, float* y, int64_t ys) {
  // The kernels want x contiguous; a strided x (a column of a row-major matrix) is gathered once.
  if (xs != 1) {
    float* xc = scratch(Slot::Vec, size_t(K));
    for (int64_t k = 0; k < K; ++k) xc[k] = x[k * xs];
    x = xc;
  }
  // Chunk boundaries on 16-output multiples keep each thread's y writes on its own cache lines.
  const int64_t blocks = (n + 15) / 16;
  auto body = [&](int64_t b0, int64_t b1) {
    const int64_t n0 = b0 * 16, n1 = std::min(n, b1 * 16);
    if (n0 >= n1) return;
    if (rows_layout) {
      ks.gemv_rows(n0, n1, K, alpha, x, W, ldw, beta, y, ys);
    } else {
      float* acc = scratch(Slot::PackB, size_t(n1 - n0));
      ks.gemv_cols(n0, n1, K, alpha, x, W, ldw, beta, y, ys, acc);
    }
  };
  if (threads <= 1) {
    body(0, blocks);
  } else {
    parallel_for(blocks, (blocks + threads - 1) / threads, body);
  }
}

}  // namespace builtin
}  // namespace fused_lora
