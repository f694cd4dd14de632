// Forward and backward of a LoRA layer on the CPU, fused and unfused (PEFT's order).
//
// The fused path is a sequence of GEMMs that write into the outputs with beta = 1, scaling folded
// into alpha: the frozen GEMM reads W once, the rank-r products are small, and no M×O temporary or
// extra pass over y, dy or dx exists. DESIGN.md's concatenation [x | s]·[W | scaling·Bᵀ]ᵀ is the
// same arithmetic; on the CPU, with a BLAS we cannot feed two K-ranges, beta = 1 avoids copying x.
#include <algorithm>
#include <cstring>
#include <vector>

#include "fused_lora/gemm.h"
#include "fused_lora/lora.h"
#include "fused_lora/threads.h"

namespace fused_lora {
namespace {

constexpr Trans N = Trans::N, T = Trans::T;

// y (M, O) = bias broadcast along rows, so the frozen GEMM can add into it with beta = 1.
void fill_bias(float* y, const float* bias, int64_t M, int64_t O) {
  parallel_for(M, std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(O, 1)), [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) std::memcpy(y + m * O, bias, sizeof(float) * O);
  });
}

// dst = a + b elementwise, or dst += a when b is null (the unfused path's separate passes).
void add(float* dst, const float* a, const float* b, int64_t n) {
  parallel_for(n, 1 << 16, [&](int64_t s, int64_t e) {
    if (b != nullptr)
      for (int64_t i = s; i < e; ++i) dst[i] = a[i] + b[i];
    else
      for (int64_t i = s; i < e; ++i) dst[i] += a[i];
  });
}

const float* lora_input(const float* x, const Dropout& d) { return d.p > 0.0f ? d.x_drop : x; }

}  // namespace

void linear_forward(const float* x, const float* W, const float* bias, float* y, int64_t M, int64_t I, int64_t O) {
  if (bias != nullptr) fill_bias(y, bias, M, O);
  sgemm(N, T, M, O, I, 1.0f, x, I, W, I, bias != nullptr ? 1.0f : 0.0f, y, O);
}

void linear_backward(const float* dy, const float* W, float* dx, int64_t M, int64_t I, int64_t O) {
  sgemm(N, N, M, I, O, 1.0f, dy, O, W, I, 0.0f, dx, I);
}

void lora_forward_fused(const ForwardArgs& a) {
  const int64_t M = a.M, I = a.I, O = a.O, r = a.r;
  if (a.dropout.p > 0.0f) dropout_forward(a.x, M * I, a.dropout);
  const float* xin = lora_input(a.x, a.dropout);
  sgemm(N, N, M, r, I, 1.0f, xin, I, a.A, r, 0.0f, a.s, r);  // s = x̃·A  (M, r)
  linear_forward(a.x, a.W, a.bias, a.y, M, I, O);                 // y = x·Wᵀ + b
  sgemm(N, N, M, O, r, a.scaling, a.s, r, a.B, O, 1.0f, a.y, O);  // y += scaling·s·B
}

void lora_backward_fused(const BackwardArgs& a) {
  const int64_t M = a.M, I = a.I, O = a.O, r = a.r;
  const float beta = a.accumulate ? 1.0f : 0.0f;
  const float* xin = lora_input(a.x, a.dropout);
  sgemm(N, T, M, r, O, a.scaling, a.dy, O, a.B, O, 0.0f, a.ds, r);  // ds = scaling·dy·Bᵀ  (M, r)
  sgemm(T, N, r, O, M, a.scaling, a.s, r, a.dy, O, beta, a.dB, O);  // dB (+)= scaling·sᵀ·dy  (r, O)
  sgemm(T, N, I, r, M, 1.0f, xin, I, a.ds, r, beta, a.dA, r);       // dA (+)= x̃ᵀ·ds  (I, r)
  if (a.dx == nullptr) return;
  linear_backward(a.dy, a.W, a.dx, M, I, O);  // dx = dy·W  (M, I)
  if (a.dropout.p <= 0.0f) {
    sgemm(N, T, M, I, r, 1.0f, a.ds, r, a.A, r, 1.0f, a.dx, I);  // dx += ds·Aᵀ
    return;
  }
  // With dropout the LoRA term is masked: dx += (ds·Aᵀ) ⊙ mask / (1 − p).
  sgemm(N, T, M, I, r, 1.0f, a.ds, r, a.A, r, 0.0f, a.lora_dx, I);
  const float inv_keep = 1.0f / (1.0f - a.dropout.p);
  const uint8_t* mask = a.dropout.mask;
  parallel_for(M * I, 1 << 16, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) a.dx[i] += mask[i] ? a.lora_dx[i] * inv_keep : 0.0f;
  });
}

void lora_forward_unfused(const ForwardArgs& a) {
  const int64_t M = a.M, I = a.I, O = a.O, r = a.r;
  std::vector<float> base(static_cast<size_t>(M * O));  // result = base_layer(x)
  linear_forward(a.x, a.W, a.bias, base.data(), M, I, O);
  if (a.dropout.p > 0.0f) dropout_forward(a.x, M * I, a.dropout);  // nn.Dropout makes a new tensor
  const float* xin = lora_input(a.x, a.dropout);
  sgemm(N, N, M, r, I, 1.0f, xin, I, a.A, r, 0.0f, a.s, r);  // t = lora_A(x̃)
  std::vector<float> u(static_cast<size_t>(M * O));           // u = lora_B(t)
  sgemm(N, N, M, O, r, 1.0f, a.s, r, a.B, O, 0.0f, u.data(), O);
  std::vector<float> scaled(static_cast<size_t>(M * O));  // u * scaling, a new tensor
  parallel_for(M * O, 1 << 16, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) scaled[i] = u[i] * a.scaling;
  });
  add(a.y, base.data(), scaled.data(), M * O);  // result = result + …
}

void lora_backward_unfused(const BackwardArgs& a) {
  const int64_t M = a.M, I = a.I, O = a.O, r = a.r;
  const float* xin = lora_input(a.x, a.dropout);
  std::vector<float> du(static_cast<size_t>(M * O));  // grad of (u * scaling)
  parallel_for(M * O, 1 << 16, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) du[i] = a.dy[i] * a.scaling;
  });
  std::vector<float> dB(static_cast<size_t>(r * O));  // lora_B.weight.grad, then accumulated
  sgemm(T, N, r, O, M, 1.0f, a.s, r, du.data(), O, 0.0f, dB.data(), O);
  if (a.accumulate)
    add(a.dB, dB.data(), nullptr, r * O);
  else
    std::memcpy(a.dB, dB.data(), sizeof(float) * r * O);
  std::vector<float> dt(static_cast<size_t>(M * r));  // grad of t
  sgemm(N, T, M, r, O, 1.0f, du.data(), O, a.B, O, 0.0f, dt.data(), r);
  std::vector<float> dA(static_cast<size_t>(I * r));
  sgemm(T, N, I, r, M, 1.0f, xin, I, dt.data(), r, 0.0f, dA.data(), r);
  if (a.accumulate)
    add(a.dA, dA.data(), nullptr, I * r);
  else
    std::memcpy(a.dA, dA.data(), sizeof(float) * I * r);
  std::memcpy(a.ds, dt.data(), sizeof(float) * M * r);  // keep the workspace contract of the fused path
  if (a.dx == nullptr) return;
  std::vector<float> dxd(static_cast<size_t>(M * I));  // grad of x̃
  sgemm(N, T, M, I, r, 1.0f, dt.data(), r, a.A, r, 0.0f, dxd.data(), I);
  if (a.dropout.p > 0.0f) {  // grad through nn.Dropout, a new tensor
    std::vector<float> masked(static_cast<size_t>(M * I));
    const float inv_keep = 1.0f / (1.0f - a.dropout.p);
    for (int64_t i = 0; i < M * I; ++i) masked[i] = a.dropout.mask[i] ? dxd[i] * inv_keep : 0.0f;
    dxd.swap(masked);
  }
  std::vector<float> dx_base(static_cast<size_t>(M * I));  // grad through the base layer
  linear_backward(a.dy, a.W, dx_base.data(), M, I, O);
  add(a.dx, dx_base.data(), dxd.data(), M * I);
}

}  // namespace fused_lora
