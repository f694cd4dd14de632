// The built-in SGEMM: the fallback when no BLAS library can be loaded (see blas.h), and the reason
// the addon still runs at a useful fraction of OpenBLAS speed on a machine without one.
//
// Structure (GotoBLAS / BLIS):
//   jc: N in NC-wide panels
//     pc: K in KC-deep slabs      -> pack op(B)[pc:pc+KC, jc:jc+NC] into NR-wide slivers
//       ic: M in MC-tall blocks   -> pack op(A)[ic:ic+MC, pc:pc+KC] into MR-tall slivers
//         jr: NR slivers of the B panel (one sliver stays in L1 across the ir loop)
//           ir: MR slivers of the A block (the A block stays in L2) -> MR×NR micro-kernel
// Transposes are absorbed by the packing routines, so one micro-kernel serves all four cases, and
// partial slivers are zero-padded so the micro-kernel never branches on sizes; partial C tiles go
// through a small stack tile and only their valid part is written back.
//
// The kernels are picked at run time (the addon is built without -march), all from one kernel set
// per ISA (isa.h): AVX-512F, AVX2+FMA, or portable ones the compiler vectorises for whatever the
// baseline is (SSE2, NEON, ...). M == 1 and N == 1 (GEMV, the LoRA decode case) skip packing
// entirely and stream the matrix once. plan() decides the path, kernel, blocking and threads of a
// call; sgemm runs exactly that plan, and the addon reports it to the tests that sweep the edges.
#include "fused_lora/gemm.h"
#include "fused_lora/check.h"
#include "fused_lora/isa.h"
#include "fused_lora/threads.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#define FL_X86 1
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized on their own _mm512_undefined_ps() (a
// self-initialised placeholder) wherever a shuffle intrinsic is inlined; the warning points into
// the header, so it is silenced from the include on.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#else
#define FL_X86 0
#endif

namespace fused_lora {
namespace builtin {
namespace {

// ------------------------------------------------------------------------------------------------
// Scratch memory. Every chunk of a parallel_for runs wholly on one thread and nothing here is used
// across a parallel_for boundary, so thread_local buffers are never shared by concurrent chunks
// (pool workers, the caller, or an unrelated thread calling sgemm at the same time). They grow to
// the largest size seen and are then reused: no allocation in steady state.
// ------------------------------------------------------------------------------------------------
class Scratch {
 public:
  // 64-byte aligned: packed slivers are read with aligned full-cache-line vector loads.
  float* get(size_t n) {
    if (buf_.size() < n + 16) buf_.resize(n + 16);
    uintptr_t p = reinterpret_cast<uintptr_t>(buf_.data());
    return reinterpret_cast<float*>((p + 63) & ~uintptr_t(63));
  }

 private:
  std::vector<float> buf_;
};

thread_local Scratch tl_pack_a, tl_pack_b, tl_vec;

// a(i, k) = a[k*as + i], b(k, j) = b[k*bs + j]: as == MR / bs == NR for packed slivers, or the
// source's leading dimension when a skinny operand is read in place (see gemm_serial).
using Ukr = void (*)(int64_t kc, const float* a, int64_t as, const float* b, int64_t bs, float* c,
                     int64_t ldc, float alpha, float beta);
// d[k*R + i] = s[i*ld + k] for i < rows, zero for rows <= i < R: the transposing half of packing.
using PackT = void (*)(const float* s, int64_t ld, int64_t rows, int R, int64_t kc, float* d);

struct Kernel {
  int mr, nr;
  int mc, kc, nc;  // cache blocking for this kernel's tile shape
  Ukr ukr;
  Ukr ukr_direct_b;  // the same, for B read in place (may prefetch it)
};

constexpr int kMaxTile = 24 * 48;  // >= MR*NR of every kernel (the edge-tile scratch; checked below)
constexpr int kMaxSliver = 64;     // >= MR and NR of every kernel (pack_t_generic's staging tile)

inline int64_t round_up(int64_t v, int64_t q) { return (v + q - 1) / q * q; }

// ------------------------------------------------------------------------------------------------
// Packing. A sliver: for each k, MR consecutive values a(i, k). B sliver: for each k, NR consecutive
// values b(k, j). Slivers of one block are contiguous, each kc*MR (kc*NR) floats long. Both operands
// reduce to the same two cases: the sliver's R values for one k are contiguous in the source (a
// copy) or they are R rows of the source (a transpose).
// ------------------------------------------------------------------------------------------------

// d[k*R + i] = s[k*ld + i] for i < cols, zero for cols <= i < R.
void pack_copy(const float* s, int64_t ld, int64_t cols, int R, int64_t kc, float* d) {
  if (cols == R) {
    for (int64_t k = 0; k < kc; ++k) std::memcpy(d + k * R, s + k * ld, sizeof(float) * size_t(R));
  } else {
    for (int64_t k = 0; k < kc; ++k) {
      float* dk = d + k * R;
      const float* sk = s + k * ld;
      int64_t i = 0;
      for (; i < cols; ++i) dk[i] = sk[i];
      for (; i < R; ++i) dk[i] = 0.f;
    }
  }
}

// Transpose, portable. The R source rows are usually a power-of-two stride apart (ld = 1024, 2048,
// ...), so they all map to the same few L1 sets: walking them column by column would miss on every
// element. Instead each 16-float run (one cache line) of every row is consumed at once into a small
// staging tile, which is then written out k-major.
void pack_t_generic(const float* s, int64_t ld, int64_t rows, int R, int64_t kc, float* d) {
  constexpr int KB = 16;
  float tmp[kMaxSliver * KB];
  FL_DCHECK(R <= kMaxSliver);
  for (int64_t k0 = 0; k0 < kc; k0 += KB) {
    const int kn = int(std::min<int64_t>(KB, kc - k0));
    for (int i = 0; i < R; ++i) {
      float* t = tmp + i * KB;
      if (i < rows) {
        const float* si = s + i * ld + k0;
        for (int kk = 0; kk < kn; ++kk) t[kk] = si[kk];
      } else {
        for (int kk = 0; kk < kn; ++kk) t[kk] = 0.f;
      }
    }
    for (int kk = 0; kk < kn; ++kk) {
      float* dk = d + (k0 + kk) * R;
      for (int i = 0; i < R; ++i) dk[i] = tmp[i * KB + kk];
    }
  }
}

#if FL_X86
// Transpose, AVX-512: 16 rows × 16 k per step, one full-line load per row and an in-register 16×16
// transpose; rows past `rows` load as zero, which is the padding.
__attribute__((target("avx512f"))) void pack_t_avx512(const float* s, int64_t ld, int64_t rows, int R,
                                                      int64_t kc, float* d) {
  for (int g = 0; g < R; g += 16) {
    const int gr = std::min(16, R - g);
    const __mmask16 smask = __mmask16((1u << gr) - 1u);
    for (int64_t k0 = 0; k0 < kc; k0 += 16) {
      const int kn = int(std::min<int64_t>(16, kc - k0));
      const __mmask16 lmask = __mmask16((1u << kn) - 1u);
      __m512 r[16], t[16];
      for (int i = 0; i < 16; ++i)
        r[i] = g + i < rows ? _mm512_maskz_loadu_ps(lmask, s + (g + i) * ld + k0) : _mm512_setzero_ps();
      // 32-bit interleave within 128-bit lanes, then 64-bit, then 128-bit lane shuffles.
      for (int i = 0; i < 8; ++i) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
      }
      for (int i = 0; i < 4; ++i) {
        const __m512d t0 = _mm512_castps_pd(t[4 * i]), t1 = _mm512_castps_pd(t[4 * i + 1]);
        const __m512d t2 = _mm512_castps_pd(t[4 * i + 2]), t3 = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
      }
      // r[4q + c], lane L, holds rows 4q..4q+3 at k = 4L + c.
      for (int c = 0; c < 4; ++c) {
        const __m512 x0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x44);
        const __m512 x1 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x44);
        const __m512 y0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xEE);
        const __m512 y1 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xEE);
        t[c] = _mm512_shuffle_f32x4(x0, x1, 0x88);
        t[4 + c] = _mm512_shuffle_f32x4(x0, x1, 0xDD);
        t[8 + c] = _mm512_shuffle_f32x4(y0, y1, 0x88);
        t[12 + c] = _mm512_shuffle_f32x4(y0, y1, 0xDD);
      }
      for (int kk = 0; kk < kn; ++kk) _mm512_mask_storeu_ps(d + (k0 + kk) * R + g, smask, t[kk]);
    }
  }
}
#endif

const PackT& pack_t();  // the transposer of the chosen kernel set

// op(A)[0:m, 0:kc] into MR slivers, A already offset to (i0, p0).
void pack_a(Trans ta, const float* A, int64_t lda, int64_t m, int64_t kc, int mr, float* dst) {
  for (int64_t i0 = 0; i0 < m; i0 += mr) {
    const int64_t rows = std::min<int64_t>(mr, m - i0);
    if (ta == Trans::T)
      pack_copy(A + i0, lda, rows, mr, kc, dst + i0 * kc);  // a(i, k) = A[k*lda + i]
    else
      pack_t()(A + i0 * lda, lda, rows, mr, kc, dst + i0 * kc);  // a(i, k) = A[i*lda + k]
  }
}

// op(B)[0:kc, 0:n] into NR slivers, B already offset to (p0, j0).
void pack_b(Trans tb, const float* B, int64_t ldb, int64_t kc, int64_t n, int nr, float* dst) {
  for (int64_t j0 = 0; j0 < n; j0 += nr) {
    const int64_t cols = std::min<int64_t>(nr, n - j0);
    if (tb == Trans::N)
      pack_copy(B + j0, ldb, cols, nr, kc, dst + j0 * kc);  // b(k, j) = B[k*ldb + j]
    else
      pack_t()(B + j0 * ldb, ldb, cols, nr, kc, dst + j0 * kc);  // b(k, j) = B[j*ldb + k]
  }
}

// ------------------------------------------------------------------------------------------------
// Micro-kernels: C[0:MR, 0:NR] = alpha * Apacked·Bpacked + beta * C (beta == 0: C is not read).
// ------------------------------------------------------------------------------------------------

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

#if FL_X86
// AVX-512: MR×(16·NV) accumulators held in zmm registers for the whole K loop. Per k: NV loads of
// B, MR broadcasts of A (each feeding NV FMAs), MR·NV FMAs.
// PFB: B is read in place (direct_b in gemm_serial), its rows ldb apart; that stride defeats the
// hardware prefetchers (each row is a new page for ldb >= 1024), so the rows ~16 k-steps ahead
// (about a memory latency at 24-28 FMAs per step) are prefetched explicitly.
template <int MR, int NV, bool PFB = false>
__attribute__((target("avx512f"))) void ukr_avx512(int64_t kc, const float* __restrict a, int64_t as,
                                                   const float* __restrict b, int64_t bs, float* c,
                                                   int64_t ldc, float alpha, float beta) {
  __m512 acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_setzero_ps();

  // Pull the C tile towards L1 while the K loop runs, so the final read-modify-write does not stall.
  if (beta != 0.f) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
  }

#pragma GCC unroll 2
  for (int64_t k = 0; k < kc; ++k) {
    __m512 bv[NV];
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) bv[j] = _mm512_loadu_ps(b + 16 * j);
    if (PFB) {
      const float* pf = b + 16 * bs;
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) _mm_prefetch(reinterpret_cast<const char*>(pf + 16 * j), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(pf + 16 * NV - 1), _MM_HINT_T0);
    }
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const __m512 av = _mm512_set1_ps(a[i]);
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_fmadd_ps(av, bv[j], acc[i][j]);
    }
    a += as;
    b += bs;
  }

  const __m512 va = _mm512_set1_ps(alpha);
  if (beta == 0.f) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) _mm512_storeu_ps(c + i * ldc + 16 * j, _mm512_mul_ps(va, acc[i][j]));
  } else {
    const __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) {
        float* p = c + i * ldc + 16 * j;
        _mm512_storeu_ps(p, _mm512_fmadd_ps(va, acc[i][j], _mm512_mul_ps(vb, _mm512_loadu_ps(p))));
      }
  }
}

// AVX2+FMA: same scheme on 16 ymm registers, MR·NV ≤ 12 accumulators.
template <int MR, int NV>
__attribute__((target("avx2,fma"))) void ukr_avx2(int64_t kc, const float* __restrict a, int64_t as,
                                                  const float* __restrict b, int64_t bs, float* c,
                                                  int64_t ldc, float alpha, float beta) {
  __m256 acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) acc[i][j] = _mm256_setzero_ps();

#pragma GCC unroll 2
  for (int64_t k = 0; k < kc; ++k) {
    __m256 bv[NV];
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) bv[j] = _mm256_loadu_ps(b + 8 * j);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const __m256 av = _mm256_broadcast_ss(a + i);
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[i][j] = _mm256_fmadd_ps(av, bv[j], acc[i][j]);
    }
    a += as;
    b += bs;
  }

  const __m256 va = _mm256_set1_ps(alpha);
  if (beta == 0.f) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) _mm256_storeu_ps(c + i * ldc + 8 * j, _mm256_mul_ps(va, acc[i][j]));
  } else {
    const __m256 vb = _mm256_set1_ps(beta);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) {
        float* p = c + i * ldc + 8 * j;
        _mm256_storeu_ps(p, _mm256_fmadd_ps(va, acc[i][j], _mm256_mul_ps(vb, _mm256_loadu_ps(p))));
      }
  }
}
#endif  // FL_X86

// ------------------------------------------------------------------------------------------------
// GEMV: y[n*ys] = alpha * sum_k x[k]·W(n, k) + beta * y[n*ys], for n in [n0, n1).
//   rows layout: W(n, k) = W[n*ldw + k]  (dot products; M == 1 with B transposed, the nn.Linear case)
//   cols layout: W(n, k) = W[k*ldw + n]  (row axpys)
// Memory-bound: the point is to read W exactly once, in long sequential runs, on all cores. The
// bodies are plain C++ written as fixed-width lane arrays, inlined into per-ISA wrappers so the
// compiler vectorises them for AVX-512 / AVX2 / the baseline.
// ------------------------------------------------------------------------------------------------
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

using GemvRows = void (*)(int64_t, int64_t, int64_t, float, const float*, const float*, int64_t, float,
                          float*, int64_t);
using GemvCols = void (*)(int64_t, int64_t, int64_t, float, const float*, const float*, int64_t, float,
                          float*, int64_t, float*);

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

constexpr int64_t kDotKC = 256;
constexpr int64_t kDotMaxN = 32;  // from 32 to 64 columns the blocked path measured level with it

#if FL_X86
// ------------------------------------------------------------------------------------------------
// Narrow outputs from a row-major A (N <= 32, A not transposed: the LoRA down-projection
// x·Aᵀ, M×r with K = d_in). The blocked path would have to transpose all of A into MR slivers for
// only N·2 flops per element; here each C row is instead 16 dot products along K, vectorised along
// K, so A is read once, in place, in unit stride. op(B) is packed as Bᵀ: 16 rows of KC contiguous k
// (16 KiB at KC = 256, resident in L1 while the rows of A stream past it).
// ------------------------------------------------------------------------------------------------

// out[j] = sum of the 16 lanes of v[j], j < 16: a transpose-and-add tree.
__attribute__((target("avx512f"))) inline __m512 hsum16(const __m512* v) {
  __m512 w[8], z[4];
  for (int p = 0; p < 8; ++p)
    w[p] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * p], v[2 * p + 1]), _mm512_unpackhi_ps(v[2 * p], v[2 * p + 1]));
  for (int q = 0; q < 4; ++q) {
    const __m512d x = _mm512_castps_pd(w[2 * q]), y = _mm512_castps_pd(w[2 * q + 1]);
    z[q] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
  }
  // z[q], lane L: partial sums over lane L of v[4q..4q+3].
  const __m512 p = _mm512_add_ps(_mm512_shuffle_f32x4(z[0], z[1], 0x44), _mm512_shuffle_f32x4(z[0], z[1], 0xEE));
  const __m512 q = _mm512_add_ps(_mm512_shuffle_f32x4(z[2], z[3], 0x44), _mm512_shuffle_f32x4(z[2], z[3], 0xEE));
  return _mm512_add_ps(_mm512_shuffle_f32x4(p, q, 0x88), _mm512_shuffle_f32x4(p, q, 0xDD));
}

// C[m0:m1, 0:n] for one thread; bt is scratch for packed Bᵀ.
__attribute__((target("avx512f"))) void gemm_dot_avx512(Trans tb, int64_t m0, int64_t m1, int64_t n,
                                                        int64_t K, float alpha, const float* A, int64_t lda,
                                                        const float* B, int64_t ldb, float beta, float* C,
                                                        int64_t ldc, float* bt) {
  const __m512 va = _mm512_set1_ps(alpha);
  for (int64_t j0 = 0; j0 < n; j0 += 16) {
    const int64_t nj = std::min<int64_t>(16, n - j0);
    const __mmask16 cmask = __mmask16((1u << nj) - 1u);
    for (int64_t p0 = 0; p0 < K; p0 += kDotKC) {
      const int64_t kc = std::min(kDotKC, K - p0);
      const int64_t kcp = (kc + 15) / 16 * 16;  // zero-padded, so the k loop has no tail
      // bt[j*kcp + k] = op(B)(p0 + k, j0 + j); rows j >= nj and k >= kc are zero.
      FL_DCHECK(kcp <= kDotKC);  // bt holds 16 rows of kDotKC
      std::memset(bt, 0, sizeof(float) * size_t(16 * kcp));
      if (tb == Trans::T) {
        for (int64_t j = 0; j < nj; ++j)
          std::memcpy(bt + j * kcp, B + (j0 + j) * ldb + p0, sizeof(float) * size_t(kc));
      } else {
        for (int64_t k = 0; k < kc; ++k) {  // row segments of B in order; 16 write streams
          const float* bk = B + (p0 + k) * ldb + j0;
          for (int64_t j = 0; j < nj; ++j) bt[j * kcp + k] = bk[j];
        }
      }
      const float bet = p0 == 0 ? beta : 1.f;
      const __m512 vb = _mm512_set1_ps(bet);
      for (int64_t i = m0; i < m1; ++i) {
        const float* a = A + i * lda + p0;
        __m512 acc[16];
        for (int j = 0; j < 16; ++j) acc[j] = _mm512_setzero_ps();
        int64_t k = 0;
        for (; k + 16 <= kc; k += 16) {
          // A arrives as kc-long pieces of rows lda apart, a pattern the hardware prefetchers pick
          // up poorly, and this loop is bound by A's bandwidth: fetch the next row's piece now.
          _mm_prefetch(reinterpret_cast<const char*>(a + lda + k), _MM_HINT_T0);
          const __m512 av = _mm512_loadu_ps(a + k);
          for (int j = 0; j < 16; ++j) acc[j] = _mm512_fmadd_ps(av, _mm512_load_ps(bt + j * kcp + k), acc[j]);
        }
        if (k < kc) {
          const __m512 av = _mm512_maskz_loadu_ps(__mmask16((1u << (kc - k)) - 1u), a + k);
          for (int j = 0; j < 16; ++j) acc[j] = _mm512_fmadd_ps(av, _mm512_load_ps(bt + j * kcp + k), acc[j]);
        }
        const __m512 sum = _mm512_mul_ps(va, hsum16(acc));
        float* c = C + i * ldc + j0;
        if (bet == 0.f)
          _mm512_mask_storeu_ps(c, cmask, sum);
        else
          _mm512_mask_storeu_ps(c, cmask, _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(cmask, c), sum));
      }
    }
  }
}
#endif

// ------------------------------------------------------------------------------------------------
// Kernel sets per ISA, with their cache blocking. Measured on Zen 4 (32 KiB L1d, 1 MiB L2 per core,
// 2 cores, 2048³): the textbook rule "B sliver (KC×NR) in L1" gives KC ≈ 128 for NR = 32, but the
// C tile is then re-read and re-written every 128 k, and that costs more than streaming the B
// sliver from L2, which Zen 4 feeds at 64 B/cycle (the kernel needs 128 B per 28-FMA k step).
// So KC is deep (512: A sliver 28 KiB, B sliver 64 KiB, both from L2) and MC keeps the packed A
// block (MC×KC) at about a third of L2 (168×512×4 = 336 KiB), leaving room for the B slivers and
// the C lines passing through. KC 256 → 512 was worth ~8%; 12×32 → 14×32 another ~5%.
//   NC: the packed B panel (KC×NC) sits in L3; large, since each thread re-packs A per panel.
// MC and NC are whole slivers (checked below): packing fills round_up(mc, MR) rows and
// round_up(nc, NR) columns, zero-padded, so a block that ended inside a sliver (NC = 4096 with
// NR = 48) would pack past its MC·KC or NC·KC buffer on every layer wider than one panel.
// ------------------------------------------------------------------------------------------------
struct KernelSet {
  Isa isa;
  Kernel k[3];  // [0] the square-ish default; [1], [2] alternates for skinny outputs
  int count;
  PackT pack_t;
  GemvRows gemv_rows;
  GemvCols gemv_cols;
  bool dot;  // narrow outputs of a row-major A go to gemm_dot_avx512
};

#if FL_X86
// 14×32: 28 zmm accumulators + 2 B vectors + 1 broadcast register = 31 of 32, no spills (checked in
// the disassembly); 14 broadcasts + 2 loads per 28 FMAs keeps the load ports under the FMA rate, and
// 28 independent chains hide the 4-cycle FMA latency. 24×16 for N ≤ 16 outputs that do not take the
// dot path (A transposed), 8×48 for short-M outputs (r×N LoRA gradients, M = r = 8/16/...) so
// neither pays for zero padding.
constexpr KernelSet kAvx512 = {Isa::Avx512,
                               {{14, 32, 168, 512, 4096, &ukr_avx512<14, 2>, &ukr_avx512<14, 2, true>},
                                {24, 16, 192, 512, 4096, &ukr_avx512<24, 1>, &ukr_avx512<24, 1, true>},
                                {8, 48, 128, 512, 4080, &ukr_avx512<8, 3>, &ukr_avx512<8, 3, true>}},
                               3,
                               &pack_t_avx512,
                               &gemv_rows_avx512,
                               &gemv_cols_avx512,
                               true};
// 6×16: the classic Haswell tile, 12 ymm accumulators + 2 B vectors + 1 broadcast.
constexpr KernelSet kAvx2 = {Isa::Avx2,
                             {{6, 16, 192, 384, 4096, &ukr_avx2<6, 2>, &ukr_avx2<6, 2>},
                              {12, 8, 192, 512, 4096, &ukr_avx2<12, 1>, &ukr_avx2<12, 1>},
                              {4, 24, 192, 256, 4080, &ukr_avx2<4, 3>, &ukr_avx2<4, 3>}},
                             3,
                             &pack_t_generic,
                             &gemv_rows_avx2,
                             &gemv_cols_avx2,
                             false};
#endif
constexpr KernelSet kGeneric = {Isa::Generic,
                                {{4, 16, 128, 256, 4096, &ukr_generic<4, 16>, &ukr_generic<4, 16>},
                                 {8, 8, 128, 256, 4096, &ukr_generic<8, 8>, &ukr_generic<8, 8>},
                                 {2, 32, 128, 256, 4096, &ukr_generic<2, 32>, &ukr_generic<2, 32>}},
                                3,
                                &pack_t_generic,
                                &gemv_rows_generic,
                                &gemv_cols_generic,
                                false};

// The fixed-size scratch of gemm_serial and pack_t_generic, and the blocking arithmetic, hold for
// every kernel in a set: whole slivers per block, KC rounded to 16 stays within kc, and the tile
// fits the edge-tile and staging buffers.
constexpr bool valid(const KernelSet& s) {
  for (int i = 0; i < s.count; ++i) {
    const Kernel& k = s.k[i];
    if (k.mr < 1 || k.nr < 1 || k.mr * k.nr > kMaxTile || k.mr > kMaxSliver || k.nr > kMaxSliver) return false;
    if (k.mc < k.mr || k.mc % k.mr != 0 || k.nc < k.nr || k.nc % k.nr != 0 || k.kc < 16 || k.kc % 16 != 0) return false;
  }
  return s.count >= 1 && s.count <= 3;
}
#if FL_X86
static_assert(valid(kAvx512) && valid(kAvx2), "an x86 kernel set breaks the blocking rules");
#endif
static_assert(valid(kGeneric), "the generic kernel set breaks the blocking rules");

const KernelSet& kernels() {
  switch (isa()) {
#if FL_X86
    case Isa::Avx512: return kAvx512;
    case Isa::Avx2: return kAvx2;
#endif
    default: return kGeneric;
  }
}

const PackT& pack_t() { return kernels().pack_t; }

// The kernel wasting the least work on zero padding for this output shape; the default wins ties
// and is preferred unless an alternate saves more than ~10%.
int pick_kernel(const KernelSet& ks, int64_t M, int64_t N) {
  int best = 0;
  double best_cost = 0;
  for (int i = 0; i < ks.count; ++i) {
    const Kernel& k = ks.k[i];
    double padded = double((M + k.mr - 1) / k.mr * k.mr) * double((N + k.nr - 1) / k.nr * k.nr);
    double cost = padded * (i == 0 ? 1.0 : 1.1);
    if (i == 0 || cost < best_cost) {
      best = i;
      best_cost = cost;
    }
  }
  return best;
}

// C[0:m, 0:n] = alpha*tile + beta*C, for the valid part of a partial tile.
void store_edge(const float* tile, int nr, float* C, int64_t ldc, int64_t m, int64_t n, float alpha,
                float beta) {
  for (int64_t i = 0; i < m; ++i) {
    const float* t = tile + i * nr;
    float* c = C + i * ldc;
    if (beta == 0.f) {
      for (int64_t j = 0; j < n; ++j) c[j] = alpha * t[j];
    } else {
      for (int64_t j = 0; j < n; ++j) c[j] = alpha * t[j] + beta * c[j];
    }
  }
}

// The blocking of one thread's m×n share of C (K whole).
struct Blocking {
  int64_t MC, NC, KC;
  bool direct_a, direct_b;  // the operand is read in place, not packed
};

Blocking blocking(const Kernel& kr, Trans ta, Trans tb, int64_t m, int64_t n, int64_t K) {
  Blocking b;
  // K slabs of equal depth (e.g. K = 600 as 2×300, not 512 + 88: a shallow slab pays the C tile
  // round trip for few FMAs). kc is a multiple of 16, so rounding to 16 stays within it.
  const int64_t kslabs = (K + kr.kc - 1) / kr.kc;
  b.KC = std::min<int64_t>(kr.kc, round_up((K + kslabs - 1) / kslabs, 16));
  b.MC = std::min<int64_t>(kr.mc, round_up(m, kr.mr));  // whole slivers, as kr.mc and kr.nc are
  b.NC = std::min<int64_t>(kr.nc, round_up(n, kr.nr));
  // Packing pays for itself through reuse: a packed B sliver serves m/MR micro-kernel calls, a
  // packed A sliver n/NR. For skinny outputs that reuse is a handful of calls while packing the big
  // operand costs a full extra pass over it, so when its slivers are already laid out k-major with
  // unit stride in the source (A transposed, B not) the micro-kernel reads it in place. Only full
  // slivers go direct; a partial one is still packed (zero padding keeps the kernel branch-free).
  b.direct_a = ta == Trans::T && n <= 2 * kr.nr;
  b.direct_b = tb == Trans::N && m <= 2 * kr.mr;
  return b;
}

// One thread's share: the whole blocked algorithm on an m×n sub-problem (pointers already offset).
void gemm_serial(const Kernel& kr, Trans ta, Trans tb, int64_t m, int64_t n, int64_t K, float alpha,
                 const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                 int64_t ldc) {
  const int mr = kr.mr, nr = kr.nr;
  const Blocking bl = blocking(kr, ta, tb, m, n, K);
  const int64_t MC = bl.MC, NC = bl.NC, KC = bl.KC;
  const bool direct_a = bl.direct_a, direct_b = bl.direct_b;
  // The packing buffers are sized from this call's blocking; every pack below is checked against them.
  const int64_t ap_cap = (direct_a ? mr : MC) * KC, bp_cap = (direct_b ? nr : NC) * KC;
  float* ap = tl_pack_a.get(size_t(ap_cap));
  float* bp = tl_pack_b.get(size_t(bp_cap));
  alignas(64) float tile[kMaxTile];

  for (int64_t jc = 0; jc < n; jc += NC) {
    const int64_t nc = std::min(NC, n - jc);
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      const float beta_eff = pc == 0 ? beta : 1.f;  // later K slabs accumulate onto the first
      const float* Bpc = tb == Trans::N ? B + pc * ldb + jc : B + jc * ldb + pc;
      if (!direct_b) {
        FL_DCHECK(round_up(nc, nr) * kc <= bp_cap);
        pack_b(tb, Bpc, ldb, kc, nc, nr, bp);
      }
      for (int64_t ic = 0; ic < m; ic += MC) {
        const int64_t mc = std::min(MC, m - ic);
        const float* Apc = ta == Trans::N ? A + ic * lda + pc : A + pc * lda + ic;
        const int64_t mfull = mc / mr * mr;  // rows covered by full slivers
        if (!direct_a) {
          FL_DCHECK(round_up(mc, mr) * kc <= ap_cap);
          pack_a(ta, Apc, lda, mc, kc, mr, ap);
        } else if (mfull < mc) {
          FL_DCHECK(mr * kc <= ap_cap);
          pack_a(ta, Apc + mfull, lda, mc - mfull, kc, mr, ap);  // the partial sliver only
        }
        for (int64_t jr = 0; jr < nc; jr += nr) {
          const int64_t nv = std::min<int64_t>(nr, nc - jr);
          const float* bs;
          int64_t bstride;
          if (!direct_b) {
            bs = bp + jr * kc;
            bstride = nr;
          } else if (nv == nr) {
            bs = Bpc + jr;
            bstride = ldb;
          } else {
            FL_DCHECK(nr * kc <= bp_cap);
            pack_b(tb, Bpc + jr, ldb, kc, nv, nr, bp);
            bs = bp;
            bstride = nr;
          }
          for (int64_t ir = 0; ir < mc; ir += mr) {
            const int64_t mv = std::min<int64_t>(mr, mc - ir);
            const float* as = ap + ir * kc;
            int64_t astride = mr;
            if (direct_a) {
              if (mv == mr) {
                as = Apc + ir;
                astride = lda;
              } else {
                as = ap;
              }
            }
            float* c = C + (ic + ir) * ldc + jc + jr;
            const Ukr ukr = bstride == nr ? kr.ukr : kr.ukr_direct_b;
            if (mv == mr && nv == nr) {
              ukr(kc, as, astride, bs, bstride, c, ldc, alpha, beta_eff);
            } else {
              ukr(kc, as, astride, bs, bstride, tile, nr, 1.f, 0.f);
              store_edge(tile, nr, c, ldc, mv, nv, alpha, beta_eff);
            }
          }
        }
      }
    }
  }
}


// Thresholds for going parallel. Waking a pool worker measured ~35 µs here (a VM; two 20 µs chunks
// took ~56 µs in all), so each thread must get a few hundred µs of work for the split to pay:
// 10 MFLOP is ~100 µs of one core at the micro-kernel's rate, so two threads start at 20 MFLOP
// (e.g. 272³, or the LoRA shapes 2048×16×2048 at 134 MFLOP).
constexpr double kMinFlopsPerThread = 1.0e7;
// GEMV is bandwidth-bound (~70 GB/s per core from L3, ~20 from DRAM): split only when each thread
// streams at least this many bytes of W.
constexpr double kMinGemvBytesPerThread = 4.0 * 1024 * 1024;

// Threads for a GEMV over n outputs of K: one per kMinGemvBytesPerThread of W, 16 outputs at least.
int64_t gemv_threads(int64_t n, int64_t K) {
  const double bytes = 4.0 * double(n) * double(K);
  const int64_t t = std::max<int64_t>(1, std::min<int64_t>(num_threads(), int64_t(bytes / kMinGemvBytesPerThread)));
  return std::min<int64_t>(t, std::max<int64_t>(1, n / 16));
}

// Threads for a GEMM: one per kMinFlopsPerThread.
int64_t flop_threads(int64_t M, int64_t N, int64_t K) {
  const double flops = 2.0 * double(M) * double(N) * double(K);
  return std::min<int64_t>(num_threads(), std::max<int64_t>(1, int64_t(flops / kMinFlopsPerThread)));
}

// y = alpha·W·x + beta·y over n outputs; x is K values with stride xs.
void gemv(const KernelSet& ks, bool rows_layout, int64_t threads, int64_t n, int64_t K, float alpha, const float* x,
          int64_t xs, const float* W, int64_t ldw, float beta, float* y, int64_t ys) {
  // The kernels want x contiguous; a strided x (a column of a row-major matrix) is gathered once.
  if (xs != 1) {
    float* xc = tl_vec.get(size_t(K));
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
      float* acc = tl_pack_b.get(size_t(n1 - n0));
      ks.gemv_cols(n0, n1, K, alpha, x, W, ldw, beta, y, ys, acc);
    }
  };
  if (threads <= 1) {
    body(0, blocks);
  } else {
    parallel_for(blocks, (blocks + threads - 1) / threads, body);
  }
}

// C = beta·C (beta == 0: zero, without reading C).
void scale_c(int64_t M, int64_t N, float beta, float* C, int64_t ldc) {
  if (beta == 1.f) return;
  for (int64_t i = 0; i < M; ++i) {
    float* c = C + i * ldc;
    if (beta == 0.f) {
      std::memset(c, 0, sizeof(float) * size_t(N));
    } else {
      for (int64_t j = 0; j < N; ++j) c[j] *= beta;
    }
  }
}

// Thread t's rectangle of C in a tm×tn grid of whole micro-tiles.
struct Part {
  int64_t i0, i1, j0, j1;
};

Part part_of(int64_t t, int64_t tm, int64_t tn, const Kernel& kr, int64_t M, int64_t N) {
  const int64_t mt = (M + kr.mr - 1) / kr.mr, nt = (N + kr.nr - 1) / kr.nr;
  const int64_t mi = t / tn, ni = t % tn;
  return {std::min(M, (mi * mt / tm) * kr.mr), std::min(M, ((mi + 1) * mt / tm) * kr.mr),
          std::min(N, (ni * nt / tn) * kr.nr), std::min(N, ((ni + 1) * nt / tn) * kr.nr)};
}

// Threads: as many as the work justifies, laid out as a tm×tn grid over C that minimises the
// largest share (in micro-tiles). Each thread runs the full blocked algorithm on its rectangle
// with its own packing buffers: no barriers, so a parallel_for that degrades to running every
// chunk on the caller (busy pool, nested call) is still correct. The cost is that A is packed
// once per column of threads and B once per row, which is small next to the FMAs at any size
// that is split at all.
void thread_grid(const Kernel& kr, int64_t M, int64_t N, int64_t K, int64_t& tm, int64_t& tn) {
  const int64_t mt = (M + kr.mr - 1) / kr.mr, nt = (N + kr.nr - 1) / kr.nr;
  const int64_t T = std::min<int64_t>(flop_threads(M, N, K), mt * nt);
  tm = 1, tn = 1;
  if (T <= 1) return;
  int64_t best = -1;
  for (int64_t a = 1; a <= T; ++a) {
    if (T % a) continue;
    const int64_t b = T / a;
    if (a > mt || b > nt) continue;
    const int64_t share = ((mt + a - 1) / a) * ((nt + b - 1) / b);
    // Ties go to splitting N: B then stays whole-K per thread and A (the smaller pack for the
    // tall shapes LoRA uses) is the one duplicated.
    if (best < 0 || share < best || (share == best && b > tn)) {
      best = share;
      tm = a;
      tn = b;
    }
  }
  if (best < 0) tm = 1, tn = 1;
}

Plan plan_call(const KernelSet& ks, Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha) {
  Plan p;
  if (M <= 0 || N <= 0) return p;
  if (K <= 0 || alpha == 0.f) {
    p.path = Path::Scale;
  } else if (M == 1) {  // y(1×N) = x(1×K)·op(B): W(n, k) = op(B)(k, n)
    p.path = tb == Trans::T ? Path::GemvRows : Path::GemvCols;
    p.threads = gemv_threads(N, K);
  } else if (N == 1) {  // y(M×1) = op(A)·x: W(i, k) = op(A)(i, k)
    p.path = ta == Trans::N ? Path::GemvRows : Path::GemvCols;
    p.threads = gemv_threads(M, K);
  } else if (ks.dot && ta == Trans::N && N <= kDotMaxN) {
    p.path = Path::Dot;
    p.threads = std::min(flop_threads(M, N, K), M);
  } else {
    p.path = Path::Blocked;
    p.kernel = pick_kernel(ks, M, N);
    const Kernel& kr = ks.k[p.kernel];
    thread_grid(kr, M, N, K, p.tm, p.tn);
    p.threads = p.tm * p.tn;
    const Part first = part_of(0, p.tm, p.tn, kr, M, N);
    const Blocking b = blocking(kr, ta, tb, first.i1 - first.i0, first.j1 - first.j0, K);
    p.MC = b.MC, p.NC = b.NC, p.KC = b.KC;
    p.direct_a = b.direct_a, p.direct_b = b.direct_b;
  }
  return p;
}

Table make_table(const KernelSet& ks) {
  Table t;
  t.isa = ks.isa;
  for (int i = 0; i < ks.count; ++i) t.kernels.push_back({ks.k[i].mr, ks.k[i].nr, ks.k[i].mc, ks.k[i].kc, ks.k[i].nc});
  t.dot_max_n = ks.dot ? kDotMaxN : 0;
  t.dot_kc = ks.dot ? kDotKC : 0;
  t.min_flops_per_thread = kMinFlopsPerThread;
  t.min_gemv_bytes_per_thread = kMinGemvBytesPerThread;
  return t;
}

}  // namespace

const Table& table() {
  static const Table t = make_table(kernels());
  return t;
}

Plan plan(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha) {
  return plan_call(kernels(), ta, tb, M, N, K, alpha);
}

void sgemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const KernelSet& ks = kernels();
  const Plan p = plan_call(ks, ta, tb, M, N, K, alpha);
  switch (p.path) {
    case Path::None:
      return;
    case Path::Scale:
      scale_c(M, N, beta, C, ldc);
      return;
    case Path::GemvRows:
    case Path::GemvCols:
      if (M == 1)  // x = op(A) row 0
        gemv(ks, p.path == Path::GemvRows, p.threads, N, K, alpha, A, ta == Trans::N ? 1 : lda, B, ldb, beta, C, 1);
      else  // x = op(B) column 0; y is a strided column of C
        gemv(ks, p.path == Path::GemvRows, p.threads, M, K, alpha, B, tb == Trans::N ? ldb : 1, A, lda, beta, C, ldc);
      return;
    case Path::Dot: {
#if FL_X86
      auto rows = [&](int64_t b, int64_t e) {
        float* bt = tl_pack_b.get(size_t(16) * kDotKC);
        gemm_dot_avx512(tb, b, e, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bt);
      };
      if (p.threads <= 1)
        rows(0, M);
      else
        parallel_for(M, (M + p.threads - 1) / p.threads, rows);
#endif
      return;
    }
    case Path::Blocked:
      break;
  }

  const Kernel& kr = ks.k[p.kernel];
  auto part = [&](int64_t t) {
    const Part q = part_of(t, p.tm, p.tn, kr, M, N);
    if (q.i0 >= q.i1 || q.j0 >= q.j1) return;
    const float* Ap = ta == Trans::N ? A + q.i0 * lda : A + q.i0;
    const float* Bp = tb == Trans::N ? B + q.j0 : B + q.j0 * ldb;
    gemm_serial(kr, ta, tb, q.i1 - q.i0, q.j1 - q.j0, K, alpha, Ap, lda, Bp, ldb, beta, C + q.i0 * ldc + q.j0, ldc);
  };
  if (p.threads <= 1) {
    part(0);
  } else {
    parallel_for(p.threads, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) part(t);
    });
  }
}

}  // namespace builtin
}  // namespace fused_lora
