// The training kernels on the CPU: optimizer updates, losses with their gradients, activations with
// their backward. Plain C++ on raw pointers, no napi. Every kernel is elementwise or row-wise and
// memory-bound: one pass over its operands, vectorisable inner loops, parallel_for over large ranges.
//
// Callers validate sizes and own every buffer (the addon checks, the TS layer allocates the optimizer
// state once), so the optimizer and activation kernels allocate nothing. The reductions (losses,
// gradient norm) keep one double per fixed-size block, so their result is the same whatever the
// thread count.
#pragma once
#include <cstdint>

namespace fused_lora {

// ---- optimizers: one call per parameter tensor of n elements, updated in place -----------------

// torch.optim.AdamW, one step (step >= 1 is the count including this one):
//   p ← p·(1 − lr·wd);  m ← lerp(m, g, 1 − β1);  v ← β2·v + (1 − β2)·g²
//   p ← p − (lr / (1 − β1^step)) · m / (√v / √(1 − β2^step) + eps)
// The bias corrections are computed in double, as PyTorch's Python scalars are; the elementwise
// arithmetic is fp32, as PyTorch's on a float32 tensor.
struct AdamWArgs {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 1e-2;
  int64_t step = 1;
};
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamWArgs& a);

// torch.optim.SGD, one step:
//   d = g + wd·p;  with momentum: buf ← d on the first step, else buf ← μ·buf + (1 − dampening)·d;
//   d = nesterov ? d + μ·buf : buf;  p ← p − lr·d
// `buf` may be null when momentum == 0.
struct SgdArgs {
  double lr = 1e-3, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
  bool first_step = true;  // the momentum buffer is not yet initialised
};
void sgd_update(float* p, const float* g, float* buf, int64_t n, const SgdArgs& a);

// Σ g[i]² in double (fixed blocks, so deterministic).
double sum_squares(const float* g, int64_t n);
// x[i] *= c.
void scale_inplace(float* x, int64_t n, float c);

// torch.nn.utils.clip_grad_norm_ (L2): total = √(Σ over all tensors of Σ g²), in double; when
// coef = max_norm / (total + 1e-6) is below 1 (or NaN), every gradient is multiplied by fp32(coef).
// A non-finite total scales nothing when `skip_nonfinite` is set (the caller raises an error).
double clip_grad_norm(float* const* grads, const int64_t* sizes, int64_t count, double max_norm, bool skip_nonfinite);

// ---- losses: the mean loss, in double, and its gradient, written to `grad` ----------------------

// mean((y − t)²) over n elements; grad = 2·(y − t)/n. n >= 1.
double mse_loss(const float* y, const float* t, float* grad, int64_t n);

// Mean over M rows of −log softmax(logits[m])[labels[m]], logits (M, C) row-major; grad (M, C) =
// (softmax − onehot)/M. Each row subtracts its max and takes the log-sum-exp in double, so logits of
// ±1000 neither overflow nor underflow. labels[m] must be in [0, C) (checked by the caller). M, C >= 1.
double cross_entropy_loss(const float* logits, const int32_t* labels, float* grad, int64_t M, int64_t C);

// ---- activations: elementwise over n, any shape -------------------------------------------------

// y = max(x, 0) (NaN stays NaN); dx = dy where x > 0, else 0 (PyTorch's threshold_backward).
void relu_forward(const float* x, float* y, int64_t n);
void relu_backward(const float* x, const float* dy, float* dx, int64_t n);

// The exact GELU (PyTorch's nn.GELU() default): y = x·Φ(x) with Φ(x) = ½(1 + erf(x/√2));
// dx = dy·(Φ(x) + x·φ(x)), φ(x) = exp(−x²/2)/√(2π). fp32 arithmetic, as PyTorch on float32.
void gelu_forward(const float* x, float* y, int64_t n);
void gelu_backward(const float* x, const float* dy, float* dx, int64_t n);

}  // namespace fused_lora
