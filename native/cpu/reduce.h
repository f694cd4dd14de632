// Deterministic parallel sums: [0, n) is cut into fixed blocks (their size depends on n only, never
// on the thread count), each block's partial sum is a double, and the partials are added in block
// order. So a loss or a gradient norm has the same bits on 1 thread and on 64.
#pragma once
#include <cstdint>
#include <vector>

#include "fused_lora/threads.h"

namespace fused_lora::detail {

// partial(begin, end) returns the double sum of one block [begin, end).
template <class Partial>
double block_sum(int64_t n, int64_t block, const Partial& partial) {
  if (n <= 0) return 0.0;
  const int64_t blocks = (n + block - 1) / block;
  if (blocks == 1) return partial(0, n);
  std::vector<double> sums(static_cast<size_t>(blocks));  // a few doubles: n / block of them
  parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) sums[b] = partial(b * block, b + 1 == blocks ? n : (b + 1) * block);
  });
  double total = 0.0;
  for (double s : sums) total += s;
  return total;
}

// Σ f(i) over [begin, end) with eight independent double accumulators: a fixed order the compiler
// can keep in registers (a single accumulator would serialise on the add's latency).
template <class Term>
double sum8(int64_t begin, int64_t end, const Term& f) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = begin;
  for (; i + 8 <= end; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] += f(i + k);
  for (int k = 0; i < end; ++i, ++k) acc[k] += f(i);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// Elements per block of the reductions, and per parallel_for chunk of the elementwise kernels: big
// enough that a thread's start-up cost is amortised, small enough to split a LoRA matrix.
constexpr int64_t kReduceBlock = 1 << 14;
constexpr int64_t kElementwiseGrain = 1 << 15;

}  // namespace fused_lora::detail
