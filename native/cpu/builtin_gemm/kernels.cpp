#include "kernels.h"

#include "dot.h"
#include "gemv.h"
#include "pack.h"
#include "plan.h"
#include "simd.h"
#include "ukr_avx2.h"
#include "ukr_avx512.h"
#include "ukr_generic.h"

namespace fused_lora {
namespace builtin {
namespace {

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

#if FL_X86
// 14×32: 28 zmm accumulators + 2 B vectors + 1 broadcast register = 31 of 32, no spills (checked in
// the disassembly); 14 broadcasts + 2 loads per 28 FMAs keeps the load ports under the FMA rate, and
// 28 independent chains hide the 4-cycle FMA latency. 24×16 for N ≤ 16 outputs that do not take the
// dot path (A transposed), 8×48 for short-M outputs (r×N LoRA gradients, M = r = 8/16/...) so
// neither pays for zero padding.
constexpr KernelSet kAvx512 = {Isa::Avx512,
                               {{14, 32, 168, 512, 4096, &ukr_avx512<14, 2>, &ukr_avx512<14, 2, true>, &ukr_avx512_pack_b<14, 2>},
                                {24, 16, 192, 512, 4096, &ukr_avx512<24, 1>, &ukr_avx512<24, 1, true>, &ukr_avx512_pack_b<24, 1>},
                                {8, 48, 128, 512, 4080, &ukr_avx512<8, 3>, &ukr_avx512<8, 3, true>, &ukr_avx512_pack_b<8, 3>}},
                               3,
                               &pack_t_avx512,
                               &gemv_rows_avx512,
                               &gemv_cols_avx512,
                               &gemv_multi_avx512,
                               true};
// 6×16: the classic Haswell tile, 12 ymm accumulators + 2 B vectors + 1 broadcast.
constexpr KernelSet kAvx2 = {Isa::Avx2,
                             {{6, 16, 192, 384, 4096, &ukr_avx2<6, 2>, &ukr_avx2<6, 2>},
                              {12, 8, 192, 512, 4096, &ukr_avx2<12, 1>, &ukr_avx2<12, 1>},
                              {4, 24, 192, 256, 4080, &ukr_avx2<4, 3>, &ukr_avx2<4, 3>}},
                             3,
                             &pack_t_avx2,
                             &gemv_rows_avx2,
                             &gemv_cols_avx2,
                             &gemv_multi_avx2,
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
                                &gemv_multi_generic,
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

}  // namespace

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

namespace {

Table make_table(const KernelSet& ks) {
  Table t;
  t.isa = ks.isa;
  for (int i = 0; i < ks.count; ++i) t.kernels.push_back({ks.k[i].mr, ks.k[i].nr, ks.k[i].mc, ks.k[i].kc, ks.k[i].nc});
  t.dot_max_n = ks.dot ? kDotMaxN : 0;
  t.dot_kc = ks.dot ? kDotKC : 0;
  t.min_flops_per_thread = kMinFlopsPerThread;
  t.min_gemv_bytes_per_thread = kMinGemvBytesPerThread;
  t.gemv_max_rows = kGemvMaxRows;
  return t;
}

}  // namespace

const Table& table() {
  static const Table t = make_table(kernels());
  return t;
}

}  // namespace builtin
}  // namespace fused_lora
