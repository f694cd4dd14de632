// The LoRA kernels on the CPU: plain C++ on raw pointers, no napi. Layouts (row-major, as in
// docs/ARCHITECTURE.md): x (M, I), W (O, I), bias (O), A (I, r), B (r, O), s (M, r), y (M, O). The
// LoRA kernels also take W stored (I, O) (fan_in_fan_out), read in place.
//
// Callers validate shapes and own every buffer (the addon checks, the TS layer allocates workspaces
// with the layer), so the fused kernels allocate nothing. The unfused kernels allocate their
// temporaries on purpose: they reproduce PEFT's order of operations for benchmarks and cross-checks.
#pragma once
#include <cstdint>

#include "fused_lora/isa.h"
#include "fused_lora/lowp.h"

namespace fused_lora {

struct Dropout {
  float p = 0.0f;          // in [0, 1); 0 means no dropout and no mask
  uint64_t seed = 0;       // mask element e of call `step` is a pure function of (seed, step, e)
  uint64_t step = 0;
  uint8_t* mask = nullptr; // (M, I) workspace, written by forward, read by backward: 1 = kept
  float* x_drop = nullptr; // (M, I) workspace: x ⊙ mask / (1 − p), the input of the LoRA path
};

struct ForwardArgs {
  int64_t M = 0, I = 0, O = 0, r = 0;
  const float* x = nullptr;     // (M, I)
  const float* W = nullptr;     // (O, I) frozen, or (I, O) with fan_in_fan_out
  bool fan_in_fan_out = false;  // W stored (I, O), as tf.layers.dense keeps its kernel: x·W, not x·Wᵀ
  FrozenW Wq;                   // format != F32: W in reduced precision (lowp.h), (O, I); W is unused
  const float* bias = nullptr;  // (O) or null
  const float* A = nullptr;     // (I, r)
  const float* B = nullptr;     // (r, O)
  float scaling = 1.0f;
  Dropout dropout;
  float* s = nullptr;  // (M, r) out: x̃·A, unscaled, saved for backward
  float* y = nullptr;  // (M, O) out
};

struct BackwardArgs {
  int64_t M = 0, I = 0, O = 0, r = 0;
  const float* x = nullptr;   // (M, I) the forward's input (x̃ is taken from dropout.x_drop when p > 0)
  const float* s = nullptr;   // (M, r) from forward
  const float* dy = nullptr;  // (M, O)
  const float* W = nullptr;   // (O, I), or (I, O) with fan_in_fan_out
  bool fan_in_fan_out = false;  // W stored (I, O): dx = dy·Wᵀ, not dy·W
  FrozenW Wq;                 // format != F32: W in reduced precision (lowp.h), (O, I); W is unused
  const float* A = nullptr;   // (I, r)
  const float* B = nullptr;   // (r, O)
  float scaling = 1.0f;
  Dropout dropout;            // the forward's: p, mask and x_drop
  float* ds = nullptr;        // (M, r) workspace: scaling·dy·Bᵀ
  float* lora_dx = nullptr;   // (M, I) workspace, needed only when p > 0 and dx is wanted
  float* dx = nullptr;        // (M, I) out, or null when the layer below needs no gradient
  float* dA = nullptr;        // (I, r) out
  float* dB = nullptr;        // (r, O) out
  bool accumulate = false;    // dA += …, dB += … (training); false overwrites (ops.loraBackward)
};

// y (M, O) = x·Wᵀ + b: the frozen layer alone (Linear.forward; the benchmarks' base GEMM). W in any
// format of lowp.h (F32: W.f32).
void linear_forward(const float* x, const FrozenW& W, const float* bias, float* y, int64_t M);
// dx (M, I) = dy·W: the gradient a frozen layer passes to the layer below.
void linear_backward(const float* dy, const FrozenW& W, float* dx, int64_t M);

// Activations held in bf16 (a bfloat16 layer on the CPU): the inputs given here (x, dy) are widened
// to fp32 and the outputs (y, dx) computed in fp32 and rounded, around the same kernels; a null
// pointer leaves that operand as the args have it. The fp32 copies live in per-thread buffers that
// grow to the largest call seen.
struct Bf16Io {
  const uint16_t* x = nullptr;
  const uint16_t* dy = nullptr;
  uint16_t* y = nullptr;
  uint16_t* dx = nullptr;
};
void lora_forward(ForwardArgs a, bool fused, const Bf16Io& io);
void lora_backward(BackwardArgs a, bool fused, const Bf16Io& io);
void linear_forward(const float* x, const FrozenW& W, const float* bias, float* y, int64_t M, const Bf16Io& io);
void linear_backward(const float* dy, const FrozenW& W, float* dx, int64_t M, const Bf16Io& io);

// y = x·Wᵀ + b + scaling·(x̃·A)·B, each product a GEMM into y with beta = 1: no M×O temporary and no
// extra pass over y (scaling rides on the GEMM's alpha).
void lora_forward_fused(const ForwardArgs& a);
// PEFT's order: base = x·Wᵀ + b; x̃ = dropout(x); t = x̃·A; u = t·B; u = u·scaling; y = base + u.
void lora_forward_unfused(const ForwardArgs& a);

// dB = scaling·sᵀ·dy, ds = scaling·dy·Bᵀ, dA = x̃ᵀ·ds, dx = dy·W + (ds·Aᵀ) ⊙ mask/(1 − p). Never dW.
void lora_backward_fused(const BackwardArgs& a);
// Autograd's order, each step a separate pass with its own temporary.
void lora_backward_unfused(const BackwardArgs& a);

// The sizes at which the LoRA kernels change path, for the tests that place shapes on both sides.
struct LoraPaths {
  int64_t frozen_builtin_max_rows;  // beside a BLAS, frozen-size GEMMs of up to this many rows run built-in
  double dx_rank_r_min_bytes;       // dx's LoRA term goes through rank_r_product from this size of dx
  double rank_r_stream_bytes;       // rank_r_product streams its stores from this size of C (AVX-512)
  int rank_r_tile_rows, rank_r_tile_cols;
  Isa rank_r_isa;                   // the rank-r products' kernel (the GEMM's, isa.h)
};
LoraPaths lora_paths();

// Draws the dropout mask of (seed, step) into d.mask and writes d.x_drop = x ⊙ mask / (1 − p).
void dropout_forward(const float* x, int64_t n, const Dropout& d);

// W (O, I) += sign · scaling · (A·B)ᵀ in fp32, elementwise deterministic (so unmerge undoes merge
// exactly wherever the arithmetic is exact). Returns false, leaving W untouched, when any result
// would be non-finite.
bool lora_merge(float* W, const float* A, const float* B, int64_t I, int64_t O, int64_t r, float scaling, float sign);

}  // namespace fused_lora
