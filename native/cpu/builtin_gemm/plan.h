// How the built-in GEMM runs a call: the path (scale only, GEMV, dot, blocked), the kernel, the grid
// of threads and the blocking. sgemm.cpp runs exactly this plan; gemmPlan reports it to the tests.
#pragma once
#include <cstdint>

#include "fused_lora/gemm.h"
#include "kernels.h"

namespace fused_lora {
namespace builtin {

// Thresholds for going parallel. Waking a pool worker measured ~35 µs here (a VM; two 20 µs chunks
// took ~56 µs in all), so each thread must get a few hundred µs of work for the split to pay:
// 10 MFLOP is ~100 µs of one core at the micro-kernel's rate, so two threads start at 20 MFLOP
// (e.g. 272³, or the LoRA shapes 2048×16×2048 at 134 MFLOP).
constexpr double kMinFlopsPerThread = 1.0e7;
// GEMV is bandwidth-bound (~70 GB/s per core from L3, ~20 from DRAM): split only when each thread
// streams at least this many bytes of W.
constexpr double kMinGemvBytesPerThread = 4.0 * 1024 * 1024;
// Up to this many rows of x, x·Wᵀ (A row-major, B transposed: W's rows) is a GEMV over all the rows
// at once (gemv_multi) rather than the blocked algorithm: at M <= 8 the FMAs are few and packing W
// (a transposing copy of all of it, every call) cost 10-15x the product on AVX2 (2-core Zen 3,
// 4096², M = 2..8: 27-48 ms blocked against 3.4 ms for the M = 1 GEMV).
constexpr int64_t kGemvMaxRows = 8;

Plan plan_call(const KernelSet& ks, Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha);

}  // namespace builtin
}  // namespace fused_lora
