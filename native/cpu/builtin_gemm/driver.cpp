// The loops, for one thread's m×n share of C:
//   jc: N in NC-wide panels
//     pc: K in KC-deep slabs      -> pack op(B)[pc:pc+KC, jc:jc+NC] into NR-wide slivers
//       ic: M in MC-tall blocks   -> pack op(A)[ic:ic+MC, pc:pc+KC] into MR-tall slivers
//         jr: NR slivers of the B panel (one sliver stays in L1 across the ir loop)
//           ir: MR slivers of the A block (the A block stays in L2) -> MR×NR micro-kernel
// When all of m is one MC block, the B panel serves that block alone, so each sliver is packed at
// the top of its jr iteration instead (lazy_b): it is used while it is still in L1/L2, where a whole
// panel (KC×NC, 4 MiB at 512×2048) would be written out to L3 and read back.
// Transposes are absorbed by the packing routines, so one micro-kernel serves all four cases, and
// partial slivers are zero-padded so the micro-kernel never branches on sizes; partial C tiles go
// through a small stack tile and only their valid part is written back.
#include "driver.h"

#include <algorithm>

#include "fused_lora/check.h"
#include "fused_lora/threads.h"
#include "pack.h"
#include "scratch.h"

namespace fused_lora {
namespace builtin {
namespace {

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

}  // namespace

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
  // Measured on a Sapphire Rapids-class Xeon, 2 threads, 4096² W: x·Wᵀ at M = 16 / 64 / 128 in
  // 3.8 / 8.9 / 15.5 ms against 5.4 / 10.1 / 16.5 packing whole panels. dy·W was level (its sliver
  // pack reads KC rows ldb apart either way) until the first micro-kernel on each sliver packed it
  // (ukr_pack_b, AVX-512): M = 128 18.0 -> 16.8 ms.
  b.lazy_b = !b.direct_b && m <= b.MC;
  return b;
}

namespace {

// One thread's share: the whole blocked algorithm on an m×n sub-problem (pointers already offset).
void gemm_serial(const Kernel& kr, Trans ta, Trans tb, int64_t m, int64_t n, int64_t K, float alpha,
                 const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                 int64_t ldc) {
  const int mr = kr.mr, nr = kr.nr;
  const Blocking bl = blocking(kr, ta, tb, m, n, K);
  const int64_t MC = bl.MC, NC = bl.NC, KC = bl.KC;
  const bool direct_a = bl.direct_a, direct_b = bl.direct_b, lazy_b = bl.lazy_b;
  // The packing buffers are sized from this call's blocking; every pack below is checked against them.
  const int64_t ap_cap = (direct_a ? mr : MC) * KC, bp_cap = (direct_b || lazy_b ? nr : NC) * KC;
  float* ap = scratch(Slot::PackA, size_t(ap_cap));
  float* bp = scratch(Slot::PackB, size_t(bp_cap));
  alignas(64) float tile[kMaxTile];

  for (int64_t jc = 0; jc < n; jc += NC) {
    const int64_t nc = std::min(NC, n - jc);
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      const float beta_eff = pc == 0 ? beta : 1.f;  // later K slabs accumulate onto the first
      const float* Bpc = tb == Trans::N ? B + pc * ldb + jc : B + jc * ldb + pc;
      if (!direct_b && !lazy_b) {
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
          // A full B sliver of the plain (not transposed) form is packed by the first micro-kernel
          // that reads it in place, when the kernel has one that does.
          bool pack_in_ukr = false;
          if (lazy_b) {
            FL_DCHECK(nr * kc <= bp_cap);
            pack_in_ukr = tb == Trans::N && kr.ukr_pack_b != nullptr && nv == nr && mc >= mr;
            if (!pack_in_ukr) pack_b(tb, tb == Trans::N ? Bpc + jr : Bpc + jr * ldb, ldb, kc, nv, nr, bp);
            bs = bp;
            bstride = nr;
          } else if (!direct_b) {
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
            if (pack_in_ukr && ir == 0) {  // a full tile: mc >= mr and nv == nr
              kr.ukr_pack_b(kc, as, astride, Bpc + jr, ldb, bp, c, ldc, alpha, beta_eff);
              continue;
            }
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

}  // namespace

Part part_of(int64_t t, int64_t tm, int64_t tn, const Kernel& kr, int64_t M, int64_t N) {
  const int64_t mt = (M + kr.mr - 1) / kr.mr, nt = (N + kr.nr - 1) / kr.nr;
  const int64_t mi = t / tn, ni = t % tn;
  return {std::min(M, (mi * mt / tm) * kr.mr), std::min(M, ((mi + 1) * mt / tm) * kr.mr),
          std::min(N, (ni * nt / tn) * kr.nr), std::min(N, ((ni + 1) * nt / tn) * kr.nr)};
}

void gemm_blocked(const Kernel& kr, int64_t tm, int64_t tn, Trans ta, Trans tb, int64_t M, int64_t N, int64_t K,
                  float alpha, const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                  int64_t ldc) {
  const int64_t threads = tm * tn;
  auto part = [&](int64_t t) {
    const Part q = part_of(t, tm, tn, kr, M, N);
    if (q.i0 >= q.i1 || q.j0 >= q.j1) return;
    const float* Ap = ta == Trans::N ? A + q.i0 * lda : A + q.i0;
    const float* Bp = tb == Trans::N ? B + q.j0 : B + q.j0 * ldb;
    gemm_serial(kr, ta, tb, q.i1 - q.i0, q.j1 - q.j0, K, alpha, Ap, lda, Bp, ldb, beta, C + q.i0 * ldc + q.j0, ldc);
  };
  if (threads <= 1) {
    part(0);
  } else {
    parallel_for(threads, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) part(t);
    });
  }
}

}  // namespace builtin
}  // namespace fused_lora
