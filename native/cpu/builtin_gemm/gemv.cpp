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

// Several rows of x at once (2 <= MM <= 8, the rows layout): R outputs per pass, each W row read
// once and multiplied into all MM rows of x, so W streams once per call instead of once per row.
// R·MM accumulators of L lanes (R·MM <= 8: the AVX2 and SSE register files, with W and x beside them).
constexpr int multi_rows_per_pass(int MM) { return MM <= 2 ? 4 : MM <= 4 ? 2 : 1; }

// L lanes as one register of the ISA the wrapper is compiled for: a GCC vector type, so the same body
// becomes ymm code in the AVX2 wrapper and zmm code in the AVX-512 one (lane arrays, which the
// other bodies use, get vectorised across x's rows here instead of along k). aligned(4): W and x
// rows are read at any float offset.
template <int L>
struct Lanes {
  typedef float V __attribute__((vector_size(4 * L), aligned(4)));
};

// s[r·MM + m] = sum over k of x[m, k]·W(n + r, k).
template <int L, int MM, int R>
__attribute__((always_inline)) inline void gemv_multi_pass(int64_t n, int64_t K, const float* __restrict x,
                                                            int64_t ldx, const float* W, int64_t ldw,
                                                            float* __restrict s) {
  using V = typename Lanes<L>::V;
  V acc[R][MM];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MM; ++m) acc[r][m] = V{};
  int64_t k = 0;
  for (; k + L <= K; k += L)
    for (int r = 0; r < R; ++r) {
      const V w = *reinterpret_cast<const V*>(W + (n + r) * ldw + k);
      for (int m = 0; m < MM; ++m) acc[r][m] += *reinterpret_cast<const V*>(x + m * ldx + k) * w;
    }
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MM; ++m) {
      float t = 0.f;
      for (int l = 0; l < L; ++l) t += acc[r][m][l];
      const float* w = W + (n + r) * ldw;
      for (int64_t kk = k; kk < K; ++kk) t += x[m * ldx + kk] * w[kk];
      s[r * MM + m] = t;
    }
}

// Each pass runs over all of K: W's rows stream in full (blocking K so that x's slab stays in L1,
// which cuts W into short runs, measured 1.4x slower at 11008 × 4096, M = 8, on Zen 3).
template <int L, int MM>
__attribute__((always_inline)) inline void gemv_multi_m(int64_t n0, int64_t n1, int64_t K, float alpha,
                                                         const float* x, int64_t ldx, const float* W, int64_t ldw,
                                                         float beta, float* y, int64_t ldy) {
  constexpr int R = multi_rows_per_pass(MM);
  float s[R * MM];
  auto put = [&](int64_t n, int rows) {
    for (int r = 0; r < rows; ++r)
      for (int m = 0; m < MM; ++m) {
        float* c = y + m * ldy + n + r;
        *c = finish(s[r * MM + m], alpha, beta, c);
      }
  };
  int64_t n = n0;
  for (; n + R <= n1; n += R) gemv_multi_pass<L, MM, R>(n, K, x, ldx, W, ldw, s), put(n, R);
  for (; n < n1; ++n) gemv_multi_pass<L, MM, 1>(n, K, x, ldx, W, ldw, s), put(n, 1);
}

template <int L>
__attribute__((always_inline)) inline void gemv_multi_body(int64_t n0, int64_t n1, int64_t M, int64_t K, float alpha,
                                                            const float* x, int64_t ldx, const float* W, int64_t ldw,
                                                            float beta, float* y, int64_t ldy) {
  switch (M) {
    case 2: return gemv_multi_m<L, 2>(n0, n1, K, alpha, x, ldx, W, ldw, beta, y, ldy);
    case 3: return gemv_multi_m<L, 3>(n0, n1, K, alpha, x, ldx, W, ldw, beta, y, ldy);
    case 4: return gemv_multi_m<L, 4>(n0, n1, K, alpha, x, ldx, W, ldw, beta, y, ldy);
    case 5: return gemv_multi_m<L, 5>(n0, n1, K, alpha, x, ldx, W, ldw, beta, y, ldy);
    case 6: return gemv_multi_m<L, 6>(n0, n1, K, alpha, x, ldx, W, ldw, beta, y, ldy);
    case 7: return gemv_multi_m<L, 7>(n0, n1, K, alpha, x, ldx, W, ldw, beta, y, ldy);
    default: return gemv_multi_m<L, 8>(n0, n1, K, alpha, x, ldx, W, ldw, beta, y, ldy);
  }
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
void gemv_multi_generic(int64_t n0, int64_t n1, int64_t M, int64_t K, float alpha, const float* x, int64_t ldx,
                        const float* W, int64_t ldw, float beta, float* y, int64_t ldy) {
  gemv_multi_body<4>(n0, n1, M, K, alpha, x, ldx, W, ldw, beta, y, ldy);
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
__attribute__((target("avx512f"))) void gemv_multi_avx512(int64_t n0, int64_t n1, int64_t M, int64_t K, float alpha,
                                                          const float* x, int64_t ldx, const float* W, int64_t ldw,
                                                          float beta, float* y, int64_t ldy) {
  gemv_multi_body<16>(n0, n1, M, K, alpha, x, ldx, W, ldw, beta, y, ldy);
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
__attribute__((target("avx2,fma"))) void gemv_multi_avx2(int64_t n0, int64_t n1, int64_t M, int64_t K, float alpha,
                                                         const float* x, int64_t ldx, const float* W, int64_t ldw,
                                                         float beta, float* y, int64_t ldy) {
  gemv_multi_body<8>(n0, n1, M, K, alpha, x, ldx, W, ldw, beta, y, ldy);
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

// Y (M×n) = alpha·X·Wᵀ + beta·Y for 2 <= M <= kGemvMaxRows rows of X (row stride ldx), W in the rows
// layout: the small-batch forward of a layer (decode with a few sequences), W streamed once.
void gemv_multi(const KernelSet& ks, int64_t threads, int64_t M, int64_t n, int64_t K, float alpha, const float* x,
                int64_t ldx, const float* W, int64_t ldw, float beta, float* y, int64_t ldy) {
  const int64_t blocks = (n + 15) / 16;
  auto body = [&](int64_t b0, int64_t b1) {
    const int64_t n0 = b0 * 16, n1 = std::min(n, b1 * 16);
    if (n0 < n1) ks.gemv_multi(n0, n1, M, K, alpha, x, ldx, W, ldw, beta, y, ldy);
  };
  if (threads <= 1) {
    body(0, blocks);
  } else {
    parallel_for(blocks, (blocks + threads - 1) / threads, body);
  }
}

}  // namespace builtin
}  // namespace fused_lora
