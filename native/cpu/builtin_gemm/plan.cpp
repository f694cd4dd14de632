#include "plan.h"

#include <algorithm>

#include "dot.h"
#include "driver.h"
#include "fused_lora/threads.h"

namespace fused_lora {
namespace builtin {
namespace {

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

// Threads: as many as the work justifies, laid out as a tm×tn grid over C that minimises the
// largest share: its micro-tiles' multiply-adds plus the rows of A and columns of B it packs, per k
// (each packed value counted as one multiply-add; without the packing term a 16-row x·Wᵀ on the
// 4×24 AVX2 kernel split M by one tile in 171 and packed all of a 4096² W on both threads: 1.7x slower). Each thread runs the full blocked algorithm on its rectangle
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
    const int64_t rows = (mt + a - 1) / a, cols = (nt + b - 1) / b;
    const int64_t share = rows * cols * kr.mr * kr.nr + rows * kr.mr + cols * kr.nr;
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

}  // namespace

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
  } else if (ta == Trans::N && tb == Trans::T && M <= kGemvMaxRows) {  // x·Wᵀ for a few rows of x
    p.path = Path::GemvMulti;
    p.threads = gemv_threads(N, K);
  } else {
    p.path = Path::Blocked;
    p.kernel = pick_kernel(ks, M, N);
    const Kernel& kr = ks.k[p.kernel];
    thread_grid(kr, M, N, K, p.tm, p.tn);
    p.threads = p.tm * p.tn;
    const Part first = part_of(0, p.tm, p.tn, kr, M, N);
    const Blocking b = blocking(kr, ta, tb, first.i1 - first.i0, first.j1 - first.j0, K);
    p.MC = b.MC, p.NC = b.NC, p.KC = b.KC;
    p.direct_a = b.direct_a, p.direct_b = b.direct_b, p.lazy_b = b.lazy_b;
  }
  return p;
}

Plan plan(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha) {
  return plan_call(kernels(), ta, tb, M, N, K, alpha);
}

}  // namespace builtin
}  // namespace fused_lora
