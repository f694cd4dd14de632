// Optimizer updates and gradient clipping. Each update is one pass over (p, g, state) with the
// step's scalars hoisted out of the loop, so the loop body is branch-free fp32 arithmetic (SGD's the
// compiler vectorises; AdamW's, which needs sqrt, is written with 4-lane intrinsics). PyTorch's
// operation order is kept, so the results agree with torch.optim to the last few ulps.
#include <cmath>

#include "fused_lora/threads.h"
#include "fused_lora/train.h"
#include "reduce.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#elif defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#endif

// Separate multiplies and adds everywhere (no FMA): the vector body and the scalar tail then give
// the same bits, so results do not depend on where parallel_for cuts the range, and a reloaded
// optimizer continues bit for bit. (GCC in -std=c++17 mode already compiles this way; Clang needs
// the pragma.)
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

namespace fused_lora {

namespace {

struct AdamWScalars {
  float decay, w, w1, b2, c2, bc2_sqrt, eps, neg_step;
};

// A 4-lane float vector with IEEE add/sub/mul/div/sqrt, or nothing where neither SSE2 nor NEON is.
// Hand-written because compilers will not vectorise sqrt in a loop by themselves unless built with
// -fno-math-errno (a negative input must set errno), and binding.gyp keeps the default flags.
#if defined(__SSE2__)
#define FUSED_LORA_F4 1
using f4 = __m128;
inline f4 ld(const float* p) { return _mm_loadu_ps(p); }
inline void st(float* p, f4 x) { _mm_storeu_ps(p, x); }
inline f4 dup(float x) { return _mm_set1_ps(x); }
inline f4 add(f4 a, f4 b) { return _mm_add_ps(a, b); }
inline f4 sub(f4 a, f4 b) { return _mm_sub_ps(a, b); }
inline f4 mul(f4 a, f4 b) { return _mm_mul_ps(a, b); }
inline f4 div(f4 a, f4 b) { return _mm_div_ps(a, b); }
inline f4 sqrt4(f4 a) { return _mm_sqrt_ps(a); }
#elif defined(__aarch64__) && defined(__ARM_NEON)
#define FUSED_LORA_F4 1
using f4 = float32x4_t;
inline f4 ld(const float* p) { return vld1q_f32(p); }
inline void st(float* p, f4 x) { vst1q_f32(p, x); }
inline f4 dup(float x) { return vdupq_n_f32(x); }
inline f4 add(f4 a, f4 b) { return vaddq_f32(a, b); }
inline f4 sub(f4 a, f4 b) { return vsubq_f32(a, b); }
inline f4 mul(f4 a, f4 b) { return vmulq_f32(a, b); }
inline f4 div(f4 a, f4 b) { return vdivq_f32(a, b); }
inline f4 sqrt4(f4 a) { return vsqrtq_f32(a); }
#endif

// One chunk of the AdamW update. torch's lerp(m, g, w) takes one of two forms by |w| (each exact at
// its own end); the form is fixed per step, so it is a template parameter and the loop stays
// branch-free. The vector body and the scalar tail do the same operations in the same order.
template <bool kSmallW>
void adamw_range(float* __restrict p, const float* __restrict g, float* __restrict m, float* __restrict v,
                 int64_t begin, int64_t end, const AdamWScalars s) {
  int64_t i = begin;
#ifdef FUSED_LORA_F4
  const f4 w = dup(s.w), w1 = dup(s.w1), b2 = dup(s.b2), c2 = dup(s.c2), bc2_sqrt = dup(s.bc2_sqrt);
  const f4 eps = dup(s.eps), decay = dup(s.decay), neg_step = dup(s.neg_step);
  for (; i + 4 <= end; i += 4) {
    const f4 gi = ld(g + i), m0 = ld(m + i);
    const f4 mi = kSmallW ? add(m0, mul(w, sub(gi, m0))) : sub(gi, mul(sub(gi, m0), w1));
    const f4 vi = add(mul(ld(v + i), b2), mul(mul(c2, gi), gi));
    const f4 denom = add(div(sqrt4(vi), bc2_sqrt), eps);
    st(m + i, mi);
    st(v + i, vi);
    st(p + i, add(mul(ld(p + i), decay), mul(neg_step, div(mi, denom))));
  }
#endif
  for (; i < end; ++i) {
    const float gi = g[i];
    const float mi = kSmallW ? m[i] + s.w * (gi - m[i]) : gi - (gi - m[i]) * s.w1;
    const float vi = v[i] * s.b2 + s.c2 * gi * gi;
    const float denom = std::sqrt(vi) / s.bc2_sqrt + s.eps;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * s.decay + s.neg_step * (mi / denom);
  }
}

}  // namespace

void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamWArgs& a) {
  // Scalars as in torch.optim.AdamW's single-tensor path: Python doubles, rounded to fp32 when they
  // meet a float32 tensor.
  const double bc1 = 1.0 - std::pow(a.beta1, static_cast<double>(a.step));
  const double bc2 = 1.0 - std::pow(a.beta2, static_cast<double>(a.step));
  AdamWScalars s;
  s.decay = static_cast<float>(1.0 - a.lr * a.weight_decay);
  s.w = static_cast<float>(1.0 - a.beta1);
  s.w1 = 1.0f - s.w;
  s.b2 = static_cast<float>(a.beta2);
  s.c2 = static_cast<float>(1.0 - a.beta2);
  s.bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  s.eps = static_cast<float>(a.eps);
  s.neg_step = static_cast<float>(-(a.lr / bc1));
  const bool small_w = std::fabs(s.w) < 0.5f;
  parallel_for(n, detail::kElementwiseGrain, [=](int64_t begin, int64_t end) {
    if (small_w)
      adamw_range<true>(p, g, m, v, begin, end, s);
    else
      adamw_range<false>(p, g, m, v, begin, end, s);
  });
}

void sgd_update(float* p, const float* g, float* buf, int64_t n, const SgdArgs& a) {
  const float wd = static_cast<float>(a.weight_decay), mu = static_cast<float>(a.momentum);
  const float keep = static_cast<float>(1.0 - a.dampening), neg_lr = static_cast<float>(-a.lr);
  // Loop-invariant flags: the compiler unswitches the loop into one branch-free copy per case.
  const bool decay = a.weight_decay != 0.0, momentum = a.momentum != 0.0 && buf != nullptr;
  const bool nesterov = a.nesterov, first = a.first_step;
  parallel_for(n, detail::kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float d = g[i];
      if (decay) d = d + wd * p[i];
      if (momentum) {
        const float b = first ? d : buf[i] * mu + keep * d;
        buf[i] = b;
        d = nesterov ? d + mu * b : b;
      }
      p[i] = p[i] + neg_lr * d;
    }
  });
}

double sum_squares(const float* g, int64_t n) {
  return detail::block_sum(n, detail::kReduceBlock, [g](int64_t begin, int64_t end) {
    return detail::sum8(begin, end, [g](int64_t i) {
      const double x = g[i];
      return x * x;
    });
  });
}

void scale_inplace(float* x, int64_t n, float c) {
  parallel_for(n, detail::kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) x[i] *= c;
  });
}

double clip_grad_norm(float* const* grads, const int64_t* sizes, int64_t count, double max_norm, bool skip_nonfinite) {
  double sq = 0.0;
  for (int64_t t = 0; t < count; ++t) sq += sum_squares(grads[t], sizes[t]);
  const double total = std::sqrt(sq);
  if (!std::isfinite(total) && skip_nonfinite) return total;
  // PyTorch multiplies by clamp(coef, max=1): a no-op when coef >= 1, NaN when the norm is NaN.
  const double coef = max_norm / (total + 1e-6);
  if (!(coef >= 1.0)) {
    const float c = static_cast<float>(coef);
    for (int64_t t = 0; t < count; ++t) scale_inplace(grads[t], sizes[t], c);
  }
  return total;
}

}  // namespace fused_lora
