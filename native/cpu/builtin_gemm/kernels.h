// The built-in GEMM's kernel sets: what one ISA brings (micro-kernels with their cache blocking, the
// pack transposer, the GEMV kernels, whether it has the dot path), and the one chosen for this process.
// kernels.cpp holds the sets and the choice; the pieces they point at live in pack.cpp, ukr_*.h,
// gemv.cpp and dot.cpp, and the driver (driver.cpp) runs whichever set is chosen.
//
// Where a new operand format goes. The driver reaches the operands only through the packers
// (pack_a, pack_b) and the micro-kernel, so neither case needs a second driver:
// - a frozen weight held as bf16, as int8 with per-channel scales or as nf4 codes with per-block
//   absmax is read by a packer in pack.cpp of pack_b's shape that dequantizes into the same float
//   slivers; the driver picks it by the operand's format where it calls pack_b (and never reads
//   such a B in place, direct_b), and the micro-kernels and the blocking stay as they are;
// - a bf16 micro-kernel (vdpbf16ps, two k per FMA) reads slivers of bf16 k-pairs: its template goes
//   in ukr_avx512.h under target("avx512f,avx512bf16"), its packers in pack.cpp, its Kernel entries
//   in kernels.cpp's AVX-512 set, each Kernel then naming its packers for the driver to call, and
//   isa.cpp checks the CPU for avx512_bf16. valid() (kernels.cpp) holds it to the blocking rules.
#pragma once
#include <cstdint>

#include "fused_lora/gemm.h"
#include "fused_lora/isa.h"

namespace fused_lora {
namespace builtin {

// a(i, k) = a[k*as + i], b(k, j) = b[k*bs + j]: as == MR / bs == NR for packed slivers, or the
// source's leading dimension when a skinny operand is read in place (see gemm_serial).
using Ukr = void (*)(int64_t kc, const float* a, int64_t as, const float* b, int64_t bs, float* c,
                     int64_t ldc, float alpha, float beta);
// The same product with B read in place (bs its leading dimension), writing the sliver it reads to
// bp packed (bp[k*NR + j] = b(k, j)) for the micro-kernels after it.
using UkrPackB = void (*)(int64_t kc, const float* a, int64_t as, const float* b, int64_t bs, float* bp, float* c,
                          int64_t ldc, float alpha, float beta);
// d[k*R + i] = s[i*ld + k] for i < rows, zero for rows <= i < R: the transposing half of packing.
using PackT = void (*)(const float* s, int64_t ld, int64_t rows, int R, int64_t kc, float* d);
// GEMV over outputs [n0, n1) (gemv.h): rows layout W(n, k) = W[n*ldw + k], cols layout W[k*ldw + n].
using GemvRows = void (*)(int64_t, int64_t, int64_t, float, const float*, const float*, int64_t, float,
                          float*, int64_t);
using GemvCols = void (*)(int64_t, int64_t, int64_t, float, const float*, const float*, int64_t, float,
                          float*, int64_t, float*);
// The rows-layout GEMV for 2..kGemvMaxRows rows of x (gemv.h): outputs [n0, n1), M, K, alpha, x, ldx, W,
// ldw, beta, y, ldy.
using GemvMulti = void (*)(int64_t, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                           float, float*, int64_t);

struct Kernel {
  int mr, nr;
  int mc, kc, nc;  // cache blocking for this kernel's tile shape
  Ukr ukr;
  Ukr ukr_direct_b;  // the same, for B read in place (may prefetch it)
  UkrPackB ukr_pack_b = nullptr;  // B read in place and packed on the way (null: driver packs first)
};

constexpr int kMaxTile = 24 * 48;  // >= MR*NR of every kernel (the edge-tile scratch; checked below)
constexpr int kMaxSliver = 64;     // >= MR and NR of every kernel (pack_t_generic's staging tile)

inline int64_t round_up(int64_t v, int64_t q) { return (v + q - 1) / q * q; }

struct KernelSet {
  Isa isa;
  Kernel k[3];  // [0] the square-ish default; [1], [2] alternates for skinny outputs
  int count;
  PackT pack_t;
  GemvRows gemv_rows;
  GemvCols gemv_cols;
  GemvMulti gemv_multi;
  bool dot;  // narrow outputs of a row-major A go to the dot path (dot.h)
};

// The set of the ISA chosen for this process (isa.h).
const KernelSet& kernels();
// Its transposer (pack_a and pack_b use it).
const PackT& pack_t();

}  // namespace builtin
}  // namespace fused_lora
