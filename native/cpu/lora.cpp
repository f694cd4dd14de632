// Forward and backward of a LoRA layer on the CPU, fused and unfused (PEFT's order).
//
// The fused path writes the rank-r term into the output first (one write-only pass, rank_r.h, with
// scaling and the bias folded in), then the frozen GEMM adds into it with beta = 1: W is read once,
// the rank-r products are small, and no M×O temporary or extra pass over y or dx exists.
// The device's concatenation [x | s]·[W | scaling·Bᵀ]ᵀ is the same arithmetic; with a BLAS we cannot
// feed two K-ranges, and beta = 1 gets the same passes without copying x.
#include <algorithm>
#include <cstring>
#include <vector>

#include "fused_lora/blas.h"
#include "fused_lora/gemm.h"
#include "fused_lora/lora.h"
#include "fused_lora/threads.h"
#include "rank_r.h"
#include "routes.h"

namespace fused_lora {
namespace {

constexpr Trans N = Trans::N, T = Trans::T;

// dst[0, n) = src[0, n). A zero-length buffer may have a null pointer (an empty Float32Array), and
// memcpy with a null pointer is undefined even for 0 bytes, so n == 0 copies nothing.
inline void copy_floats(float* dst, const float* src, int64_t n) {
  if (n > 0) std::memcpy(dst, src, sizeof(float) * n);
}

// y (M, O) = bias broadcast along rows, so the frozen GEMM can add into it with beta = 1.
void fill_bias(float* y, const float* bias, int64_t M, int64_t O) {
  parallel_for(M, std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(O, 1)), [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) copy_floats(y + m * O, bias, O);
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

// Which GEMM runs each product (bench/NOTES.md has the measurements). A loaded BLAS is not the
// fastest kernel for every shape here:
//  - the rank-r products with a skinny output (x·A, dy·Bᵀ, sᵀ·dy, x̃ᵀ·ds: N or M = r, K = I, O or
//    M) run at 20-80 GFLOP/s in OpenBLAS and 65-160 in the built-in GEMM's dot-product path;
//  - the K = r products of the unfused path (u = s·B, ds·Aᵀ) are written with beta = 0, which the
//    built-in kernel does in one write pass, where OpenBLAS first zeroes C in a pass of its own (the
//    fused path writes them with rank_r_product, faster than either);
//  - OpenBLAS's GEMV (M = 1) reads W on one thread: 4-10x slower than the built-in GEMV, and its
//    M <= 8 GEMMs are 1.2-2.4x slower than ours.
// So those go to the built-in kernel even when a BLAS is loaded. The frozen-size products from M = 9
// up are a closer call, settled per built-in kernel by bench/routes.mjs (OpenBLAS 0.3.21 against the
// built-in GEMM for x·Wᵀ and dy·W, 1 and 2 threads, I = O = 1024 and 4096, 4096 -> 11008):
//  - AVX-512, on a Sapphire Rapids-class Xeon (results/2026-12-03-spr-routes.json; B packed a sliver
//    at a time while all of M is one block, driver.cpp): x·Wᵀ 1.02-1.77x faster than OpenBLAS at
//    M = 9-128 and dy·W 1.00-2.46x, both 0.89-1.08x from M = 256. So up to 128 rows.
//  - AVX2 and the portable kernel: up to 8 rows, as measured on Zen 3 (bench/NOTES.md: OpenBLAS 11
//    against our 18 ms at M = 16, 4096², before B was packed a sliver at a time); dy·W was also
//    0.8-0.9x of OpenBLAS's Haswell kernels at M = 9-128 on the Xeon.

void gemm(Route route, Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  // Degenerate shapes (and the no-BLAS case) go through sgemm(), which settles them once.
  if (route == Route::Builtin && M > 0 && N > 0 && K > 0 && alpha != 0.0f && blas_loaded())
    builtin::sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  else
    sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// dx = ds·Aᵀ through rank_r_product from this size of dx (lora_term_dx).
constexpr double kRankRMinBytes = 8.0 * 1024 * 1024;
int64_t builtin_max_rows_frozen() { return isa() == Isa::Avx512 ? 128 : 8; }
Route frozen_route(int64_t M) { return M <= builtin_max_rows_frozen() ? Route::Builtin : Route::Any; }

// The frozen products in fp32, for W (O, I) as nn.Linear stores it or W (I, O) (fan_in_fan_out, as
// tf.layers.dense stores its kernel): the same product with the other transpose flag and leading
// dimension, so neither layout is copied. y (M, O) = x·Wᵀ + beta·y (NT), or x·W (NN).
void frozen_forward(const float* x, const float* W, bool io, float beta, float* y, int64_t M, int64_t I, int64_t O) {
  gemm(frozen_route(M), N, io ? N : T, M, O, I, 1.0f, x, I, W, io ? O : I, beta, y, O);
}

// dx (M, I) = dy·W + beta·dx (NN), or dy·Wᵀ for W stored (I, O) (NT).
void frozen_backward(const float* dy, const float* W, bool io, float beta, float* dx, int64_t M, int64_t I, int64_t O) {
  gemm(frozen_route(M), N, io ? T : N, M, I, O, 1.0f, dy, O, W, io ? O : I, beta, dx, I);
}

void frozen_forward(const float* x, const FrozenW& W, float beta, float* y, int64_t M) {
  if (W.format == WFormat::F32) return frozen_forward(x, W.f32, false, beta, y, M, W.I, W.O);
  wgemm_nt(M, 1.0f, x, W.I, W, beta, y, W.O);
}

void frozen_backward(const float* dy, const FrozenW& W, float beta, float* dx, int64_t M) {
  if (W.format == WFormat::F32) return frozen_backward(dy, W.f32, false, beta, dx, M, W.I, W.O);
  wgemm_nn(M, 1.0f, dy, W.O, W, beta, dx, W.I);
}

namespace {

// The frozen weight of a call: fp32 in either layout (above), or reduced precision (lowp.h: its own
// GEMMs, which dequantize into their packed panels).
struct Frozen {
  const float* W;
  bool io;
  const FrozenW* q;  // null: fp32
};

template <class Args>
Frozen frozen_of(const Args& a) {
  return {a.W, a.fan_in_fan_out, a.Wq.format == WFormat::F32 ? nullptr : &a.Wq};
}

void frozen_forward_any(const float* x, const Frozen& w, float beta, float* y, int64_t M, int64_t I, int64_t O) {
  if (w.q != nullptr) return frozen_forward(x, *w.q, beta, y, M);
  frozen_forward(x, w.W, w.io, beta, y, M, I, O);
}

void frozen_backward_any(const float* dy, const Frozen& w, float beta, float* dx, int64_t M, int64_t I, int64_t O) {
  if (w.q != nullptr) return frozen_backward(dy, *w.q, beta, dx, M);
  frozen_backward(dy, w.W, w.io, beta, dx, M, I, O);
}

void frozen_linear(const float* x, const Frozen& w, const float* bias, float* y, int64_t M, int64_t I, int64_t O) {
  if (bias != nullptr) fill_bias(y, bias, M, O);
  frozen_forward_any(x, w, bias != nullptr ? 1.0f : 0.0f, y, M, I, O);
}

// Aᵀ (r, I) from A (I, r), for dx = ds·Aᵀ through rank_r_product (which wants R row-major). I·r
// floats, per-thread scratch that grows to the largest size seen.
const float* transpose_A(const float* A, int64_t I, int64_t r) {
  thread_local std::vector<float> At;
  if (At.size() < size_t(I * r)) At.resize(size_t(I * r));
  for (int64_t i = 0; i < I; ++i)
    for (int64_t j = 0; j < r; ++j) At[size_t(j * I + i)] = A[i * r + j];
  return At.data();
}

}  // namespace

// dx (M, I) = ds·Aᵀ, written without reading dx. rank_r_product wants Aᵀ row-major, a transpose of
// I·r floats (~30 µs at I = 2048, r = 16) that pays only on large outputs, where its streaming
// stores save a read of dx from memory; below that the built-in GEMM reads A in place.
bool lora_term_dx_rank_r(int64_t M, int64_t I) { return 4.0 * double(M) * double(I) >= kRankRMinBytes; }

void lora_term_dx(const float* ds, const float* A, float* dx, int64_t M, int64_t I, int64_t r) {
  if (lora_term_dx_rank_r(M, I))
    rank_r_product(M, I, r, 1.0f, ds, r, transpose_A(A, I, r), I, nullptr, dx, I);
  else
    gemm(kRankRoute, N, T, M, I, r, 1.0f, ds, r, A, r, 0.0f, dx, I);
}

namespace {

// M = 1 (decode), y = x·Wᵀ + b + scaling·s·B, s already computed. Both products are GEMVs bound by
// memory: W (O×I) and B (r×O). Run one after the other, the second reads B single-threaded from
// L3 after W has flushed it from L2 (measured ~10 µs of the ~20 µs the LoRA term cost at I = O =
// 2048). So each thread takes a slice of the outputs and does both for its slice, W's rows then
// B's columns, while the slice of y is still in L1: B is read in parallel, right behind W.
void decode_forward(const ForwardArgs& a) {
  const int64_t I = a.I, O = a.O, r = a.r;
  if (a.bias != nullptr) copy_floats(a.y, a.bias, O);
  const float beta = a.bias != nullptr ? 1.0f : 0.0f;
  // Split like the built-in GEMV: a thread per 4 MiB of W, slices on 16-output boundaries.
  constexpr double kMinBytesPerThread = 4.0 * 1024 * 1024;
  const int64_t blocks = (O + 15) / 16;
  const int64_t threads = std::max<int64_t>(
      1, std::min<int64_t>({int64_t(num_threads()), int64_t(4.0 * double(O) * double(I) / kMinBytesPerThread), blocks}));
  parallel_for(blocks, (blocks + threads - 1) / threads, [&](int64_t b0, int64_t b1) {
    const int64_t n0 = b0 * 16, n1 = std::min(O, b1 * 16);
    if (n0 >= n1) return;
    // Nested inside parallel_for, these run serially on this thread (threads.h).
    // W's rows n0..n1 (O, I), or its columns n0..n1 (I, O)
    if (a.Wq.format != WFormat::F32)
      wgemm_nt(1, 1.0f, a.x, I, a.Wq.rows(n0, n1), beta, a.y + n0, O);
    else if (a.fan_in_fan_out)
      gemm(Route::Builtin, N, N, 1, n1 - n0, I, 1.0f, a.x, I, a.W + n0, O, beta, a.y + n0, O);
    else
      gemm(Route::Builtin, N, T, 1, n1 - n0, I, 1.0f, a.x, I, a.W + n0 * I, I, beta, a.y + n0, O);
    gemm(Route::Builtin, N, N, 1, n1 - n0, r, a.scaling, a.s, r, a.B + n0, O, 1.0f, a.y + n0, O);
  });
}

}  // namespace

LoraPaths lora_paths() {
  return {builtin_max_rows_frozen(), kRankRMinBytes, kRankRStreamBytes, kRankRTileRows, kRankRTileCols, rank_r_isa()};
}

namespace {
Frozen frozen_of(const FrozenW& W) { return {W.f32, false, W.format == WFormat::F32 ? nullptr : &W}; }
}  // namespace

void linear_forward(const float* x, const FrozenW& W, const float* bias, float* y, int64_t M) {
  frozen_linear(x, frozen_of(W), bias, y, M, W.I, W.O);
}

void linear_backward(const float* dy, const FrozenW& W, float* dx, int64_t M) {
  frozen_backward_any(dy, frozen_of(W), 0.0f, dx, M, W.I, W.O);
}

void lora_forward_fused(const ForwardArgs& a) {
  const int64_t M = a.M, I = a.I, O = a.O, r = a.r;
  if (a.dropout.p > 0.0f) dropout_forward(a.x, M * I, a.dropout);
  const float* xin = lora_input(a.x, a.dropout);
  gemm(kRankRoute, N, N, M, r, I, 1.0f, xin, I, a.A, r, 0.0f, a.s, r);  // s = x̃·A  (M, r)
  if (M == 1) {
    decode_forward(a);
    return;
  }
  // y = scaling·s·B + b, written in one pass without reading y; then the frozen GEMM adds x·Wᵀ
  // with beta = 1. Bias fill, GEMM and a separate y += scaling·s·B would be three passes over y.
  rank_r_product(M, O, r, a.scaling, a.s, r, a.B, O, a.bias, a.y, O);
  frozen_forward_any(a.x, frozen_of(a), 1.0f, a.y, M, I, O);  // y += x·Wᵀ
}

void lora_backward_fused(const BackwardArgs& a) {
  const int64_t M = a.M, I = a.I, O = a.O, r = a.r;
  const float beta = a.accumulate ? 1.0f : 0.0f;
  const float* xin = lora_input(a.x, a.dropout);
  // ds and dB each read dy: a fused dy-pass (one read) was measured slower here (bench/NOTES.md).
  gemm(kRankRoute, N, T, M, r, O, a.scaling, a.dy, O, a.B, O, 0.0f, a.ds, r);  // ds = scaling·dy·Bᵀ  (M, r)
  gemm(kRankRoute, T, N, r, O, M, a.scaling, a.s, r, a.dy, O, beta, a.dB, O);  // dB (+)= scaling·sᵀ·dy  (r, O)
  gemm(kRankRoute, T, N, I, r, M, 1.0f, xin, I, a.ds, r, beta, a.dA, r);       // dA (+)= x̃ᵀ·ds  (I, r)
  if (a.dx == nullptr) return;
  // dx = ds·Aᵀ first, written in one pass, then dx += dy·W with beta = 1 (as y in the forward).
  float* lora_dx = a.dropout.p <= 0.0f ? a.dx : a.lora_dx;
  lora_term_dx(a.ds, a.A, lora_dx, M, I, r);
  if (a.dropout.p > 0.0f) {
    // With dropout the LoRA term is masked: dx = (ds·Aᵀ) ⊙ mask / (1 − p).
    const float inv_keep = 1.0f / (1.0f - a.dropout.p);
    const uint8_t* mask = a.dropout.mask;
    parallel_for(M * I, 1 << 16, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) a.dx[i] = mask[i] ? a.lora_dx[i] * inv_keep : 0.0f;
    });
  }
  frozen_backward_any(a.dy, frozen_of(a), 1.0f, a.dx, M, I, O);  // dx += dy·W  (M, I)
}

// The unfused path runs each product on the same kernel as the fused one (the routes above), so
// fused against unfused measures the fusion, the temporaries and passes, not a choice of GEMM.
void lora_forward_unfused(const ForwardArgs& a) {
  const int64_t M = a.M, I = a.I, O = a.O, r = a.r;
  std::vector<float> base(static_cast<size_t>(M * O));  // result = base_layer(x)
  frozen_linear(a.x, frozen_of(a), a.bias, base.data(), M, I, O);
  if (a.dropout.p > 0.0f) dropout_forward(a.x, M * I, a.dropout);  // nn.Dropout makes a new tensor
  const float* xin = lora_input(a.x, a.dropout);
  gemm(kRankRoute, N, N, M, r, I, 1.0f, xin, I, a.A, r, 0.0f, a.s, r);  // t = lora_A(x̃)
  std::vector<float> u(static_cast<size_t>(M * O));           // u = lora_B(t)
  gemm(kRankRoute, N, N, M, O, r, 1.0f, a.s, r, a.B, O, 0.0f, u.data(), O);
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
  gemm(kRankRoute, T, N, r, O, M, 1.0f, a.s, r, du.data(), O, 0.0f, dB.data(), O);
  if (a.accumulate)
    add(a.dB, dB.data(), nullptr, r * O);
  else
    copy_floats(a.dB, dB.data(), r * O);
  std::vector<float> dt(static_cast<size_t>(M * r));  // grad of t
  gemm(kRankRoute, N, T, M, r, O, 1.0f, du.data(), O, a.B, O, 0.0f, dt.data(), r);
  std::vector<float> dA(static_cast<size_t>(I * r));
  gemm(kRankRoute, T, N, I, r, M, 1.0f, xin, I, dt.data(), r, 0.0f, dA.data(), r);
  if (a.accumulate)
    add(a.dA, dA.data(), nullptr, I * r);
  else
    copy_floats(a.dA, dA.data(), I * r);
  copy_floats(a.ds, dt.data(), M * r);  // keep the workspace contract of the fused path
  if (a.dx == nullptr) return;
  std::vector<float> dxd(static_cast<size_t>(M * I));  // grad of x̃
  gemm(kRankRoute, N, T, M, I, r, 1.0f, dt.data(), r, a.A, r, 0.0f, dxd.data(), I);
  if (a.dropout.p > 0.0f) {  // grad through nn.Dropout, a new tensor
    std::vector<float> masked(static_cast<size_t>(M * I));
    const float inv_keep = 1.0f / (1.0f - a.dropout.p);
    for (int64_t i = 0; i < M * I; ++i) masked[i] = a.dropout.mask[i] ? dxd[i] * inv_keep : 0.0f;
    dxd.swap(masked);
  }
  std::vector<float> dx_base(static_cast<size_t>(M * I));  // grad through the base layer
  frozen_backward_any(a.dy, frozen_of(a), 0.0f, dx_base.data(), M, I, O);
  add(a.dx, dx_base.data(), dxd.data(), M * I);
}

// Per-thread fp32 buffers for bf16 activations, one per operand.
float* act_buffer(int slot, int64_t n) {
  thread_local std::vector<float> bufs[4];
  std::vector<float>& b = bufs[slot];
  if (b.size() < size_t(n)) b.resize(size_t(n));
  return b.data();
}

const float* widened(const uint16_t* h, const float* f, int slot, int64_t n) {
  if (h == nullptr) return f;
  float* w = act_buffer(slot, n);
  bf16_to_f32(h, w, n);
  return w;
}

void lora_forward(ForwardArgs a, bool fused, const Bf16Io& io) {
  a.x = widened(io.x, a.x, 0, a.M * a.I);
  if (io.y != nullptr) a.y = act_buffer(2, a.M * a.O);
  fused ? lora_forward_fused(a) : lora_forward_unfused(a);
  if (io.y != nullptr) f32_to_bf16(a.y, io.y, a.M * a.O);
}

void lora_backward(BackwardArgs a, bool fused, const Bf16Io& io) {
  a.x = widened(io.x, a.x, 0, a.M * a.I);
  a.dy = widened(io.dy, a.dy, 1, a.M * a.O);
  if (io.dx != nullptr) a.dx = act_buffer(3, a.M * a.I);
  fused ? lora_backward_fused(a) : lora_backward_unfused(a);
  if (io.dx != nullptr) f32_to_bf16(a.dx, io.dx, a.M * a.I);
}

void linear_forward(const float* x, const FrozenW& W, const float* bias, float* y, int64_t M, const Bf16Io& io) {
  x = widened(io.x, x, 0, M * W.I);
  float* y32 = io.y != nullptr ? act_buffer(2, M * W.O) : y;
  linear_forward(x, W, bias, y32, M);
  if (io.y != nullptr) f32_to_bf16(y32, io.y, M * W.O);
}

void linear_backward(const float* dy, const FrozenW& W, float* dx, int64_t M, const Bf16Io& io) {
  dy = widened(io.dy, dy, 1, M * W.O);
  float* dx32 = io.dx != nullptr ? act_buffer(3, M * W.I) : dx;
  linear_backward(dy, W, dx32, M);
  if (io.dx != nullptr) f32_to_bf16(dx32, io.dx, M * W.I);
}

}  // namespace fused_lora
