// The activations and their backward: elementwise, in fp32 as PyTorch computes them on float32
// tensors.
#include <cmath>

#include "fused_lora/threads.h"
#include "fused_lora/train.h"
#include "reduce.h"

namespace fused_lora {

void relu_forward(const float* x, float* y, int64_t n) {
  parallel_for(n, detail::kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) y[i] = x[i] < 0.0f ? 0.0f : x[i];  // NaN < 0 is false: NaN passes
  });
}

void relu_backward(const float* x, const float* dy, float* dx, int64_t n) {
  parallel_for(n, detail::kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) dx[i] = x[i] <= 0.0f ? 0.0f : dy[i];  // gradient 0 at x = 0, as PyTorch
  });
}

namespace {
constexpr float kSqrt1_2 = 0.70710678118654752440f;       // 1/√2
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;    // 1/√(2π)
}  // namespace

void gelu_forward(const float* x, float* y, int64_t n) {
  parallel_for(n, detail::kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) y[i] = x[i] * 0.5f * (1.0f + std::erf(x[i] * kSqrt1_2));
  });
}

void gelu_backward(const float* x, const float* dy, float* dx, int64_t n) {
  parallel_for(n, detail::kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float cdf = 0.5f * (1.0f + std::erf(x[i] * kSqrt1_2));
      const float pdf = kInvSqrt2Pi * std::exp(x[i] * x[i] * -0.5f);
      dx[i] = dy[i] * (cdf + x[i] * pdf);
    }
  });
}

}  // namespace fused_lora
