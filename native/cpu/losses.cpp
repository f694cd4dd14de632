// The losses with their gradients: each produces the loss and dL/dinput in one pass (the gradient
// is what training needs; the loss is a by-product), summing in double per fixed block so the loss
// is deterministic.
#include <algorithm>
#include <cmath>

#include "fused_lora/train.h"
#include "reduce.h"

namespace fused_lora {

double mse_loss(const float* y, const float* t, float* grad, int64_t n) {
  const float scale = static_cast<float>(2.0 / static_cast<double>(n));
  const double sum = detail::block_sum(n, detail::kReduceBlock, [&](int64_t begin, int64_t end) {
    const double part = detail::sum8(begin, end, [&](int64_t i) {
      const double d = static_cast<double>(y[i]) - static_cast<double>(t[i]);
      return d * d;
    });
    for (int64_t i = begin; i < end; ++i) grad[i] = (y[i] - t[i]) * scale;  // after the sum: grad may alias y
    return part;
  });
  return sum / static_cast<double>(n);
}

double cross_entropy_loss(const float* logits, const int32_t* labels, float* grad, int64_t M, int64_t C) {
  const double inv_M = 1.0 / static_cast<double>(M);
  // Blocks of whole rows, about kReduceBlock elements each: one double per block, not per row.
  const int64_t rows_per_block = std::max<int64_t>(1, detail::kReduceBlock / C);
  const double total = detail::block_sum(M, rows_per_block, [&](int64_t m0, int64_t m1) {
    double loss = 0.0;
    for (int64_t m = m0; m < m1; ++m) {
      const float* x = logits + m * C;
      float* gr = grad + m * C;
      // Subtracting the row's max keeps every exp in (0, 1]: logits of 1000 do not overflow, and the
      // largest term is exactly 1, so the sum never underflows to 0 either.
      float mx = x[0];
      for (int64_t c = 1; c < C; ++c) mx = std::max(mx, x[c]);
      double sum = 0.0;
      for (int64_t c = 0; c < C; ++c) {
        const float e = std::exp(x[c] - mx);
        gr[c] = e;
        sum += e;
      }
      const double lse = static_cast<double>(mx) + std::log(sum);
      const int32_t label = labels[m];
      loss += lse - static_cast<double>(x[label]);
      const float scale = static_cast<float>(1.0 / sum * inv_M);
      for (int64_t c = 0; c < C; ++c) gr[c] *= scale;  // softmax / M
      // softmax − 1 at the label, in double: near 1 the fp32 difference would cancel.
      gr[label] = static_cast<float>((std::exp(static_cast<double>(x[label]) - lse) - 1.0) * inv_M);
    }
    return loss;
  });
  return total * inv_M;
}

}  // namespace fused_lora
