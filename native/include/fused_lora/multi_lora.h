// Many LoRA adapters on one frozen base, a batch whose rows each name their adapter: plain C++ on raw
// pointers, no napi. Layouts as lora.h: x (M, I), W (O, I), bias (O), y (M, O); adapter i has A_i
// (I, r_i), B_i (r_i, O) and its own scaling and dropout, ranks differing freely.
//
// The rows are grouped by adapter into segments (multi_lora_group): a permutation `order` that lists
// adapter 0's rows, then adapter 1's, ..., then the rows of the frozen layer alone, each in the order
// of x. A segment whose rows are one contiguous run of x is read in place; otherwise its rows are
// gathered once. Each direction runs one frozen GEMM over all M rows, and per segment the rank-r
// products (shrink s_i = x̃_i·A_i, expand y += scaling_i·s_i·B_i; ds_i, dB_i, dA_i) at r_i, no rank
// padded to the largest. Callers validate shapes and own every buffer, as for lora.h.
//
// The frozen weight may be in reduced precision (Wq, lowp.h: bf16, int8, nf4), read by its own GEMMs
// as a LinearLoRA over it reads it, and the activations may be bf16 (Bf16Io, lora.h: widened around
// the same kernels); the adapters, s, ds and the gradients stay fp32.
#pragma once
#include <cstdint>

#include "fused_lora/lora.h"

namespace fused_lora {

// The rows grouped by adapter. Adapter i's rows sit at grouped positions [start[i], start[i + 1]),
// then come the rows of the frozen layer alone, up to M; order[g] is the row of x at position g.
struct Segments {
  int64_t M = 0, K = 0;
  const int32_t* order = nullptr;  // (M)
  const int32_t* start = nullptr;  // (K + 1)
  // Every adapter's rows are one contiguous run of x (each segment is read in place, without dropout).
  bool grouped = false;
};

// Writes order (M) and start (K + 1) for index (M): row m's adapter in [0, K), or -1 for the frozen
// layer alone. A stable counting sort, O(M + K). Returns whether the rows are grouped (above).
bool multi_lora_group(const int32_t* index, int64_t M, int64_t K, int32_t* order, int32_t* start);

struct MultiAdapter {
  int64_t r = 0;
  const float* A = nullptr;  // (I, r)
  const float* B = nullptr;  // (r, O)
  float scaling = 1.0f;
  // p, seed and step of this adapter's mask, drawn over its segment's (n_i, I) rows as a LinearLoRA
  // given those rows would draw it; mask and x_drop are unused (the layer's xt and mask hold them).
  Dropout dropout;
  float* dA = nullptr;  // (I, r) backward: accumulated
  float* dB = nullptr;  // (r, O) backward: accumulated
};

// The elements of s (and ds): Σ_i n_i·r_i, adapter i's (n_i, r_i) block after those of adapters < i.
int64_t multi_lora_s_size(const Segments& seg, const MultiAdapter* adapters);
// Whether the layer's xt (x̃ of the adapter rows in grouped order) is needed: rows not grouped, or
// some adapter with rows and dropout.
bool multi_lora_needs_xt(const Segments& seg, const MultiAdapter* adapters);

struct MultiForwardArgs {
  int64_t M = 0, I = 0, O = 0;
  const float* x = nullptr;     // (M, I)
  const float* W = nullptr;     // (O, I) frozen
  FrozenW Wq;                   // format != F32: W in reduced precision (lowp.h); W is unused
  const float* bias = nullptr;  // (O) or null
  const MultiAdapter* adapters = nullptr;  // K of them, K = seg.K
  Segments seg;
  float* s = nullptr;       // (multi_lora_s_size) out: each segment's x̃_i·A_i, kept for backward
  float* xt = nullptr;      // (start[K], I) out when multi_lora_needs_xt, else unused: x̃ in grouped order
  uint8_t* mask = nullptr;  // (start[K], I) out when an adapter has dropout: its masks, grouped order
  float* y = nullptr;       // (M, O) out
};

struct MultiBackwardArgs {
  int64_t M = 0, I = 0, O = 0;
  const float* x = nullptr;   // (M, I) the forward's input
  const float* dy = nullptr;  // (M, O)
  const float* W = nullptr;   // (O, I) frozen: no gradient
  FrozenW Wq;                 // format != F32: W in reduced precision (lowp.h); W is unused
  const MultiAdapter* adapters = nullptr;  // the forward's, with dA and dB
  Segments seg;               // the forward's
  const float* s = nullptr;   // from forward
  const float* xt = nullptr;  // from forward (when it needed one)
  const uint8_t* mask = nullptr;  // from forward (when an adapter had dropout)
  float* ds = nullptr;        // (multi_lora_s_size) workspace: scaling_i·dy_i·B_iᵀ
  float* dyg = nullptr;       // (start[K], O) workspace when !seg.grouped: dy gathered by segment
  float* dx = nullptr;        // (M, I) out, or null
};

// y = x·Wᵀ + b, plus scaling_i·(x̃·A_i)·B_i on the rows of adapter i.
void multi_lora_forward(const MultiForwardArgs& a);
// dA_i += x̃_iᵀ·ds_i, dB_i += scaling_i·s_iᵀ·dy_i with ds_i = scaling_i·dy_i·B_iᵀ, and
// dx = dy·W + (ds_i·A_iᵀ) ⊙ mask_i / (1 − p_i) on adapter i's rows.
void multi_lora_backward(const MultiBackwardArgs& a);
// The same with bf16 activations where io names them (x, dy in; y, dx out), as lora_forward's.
void multi_lora_forward(MultiForwardArgs a, const Bf16Io& io);
void multi_lora_backward(MultiBackwardArgs a, const Bf16Io& io);

}  // namespace fused_lora
