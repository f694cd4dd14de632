// Operands that the single- and multi-adapter layers' exports read alike: the frozen weight in its
// format (fused_lora/lowp.h) and activations in fp32 or bf16.
#pragma once
#include <cstdint>

#include "fused_lora/lora.h"
#include "fused_lora/lowp.h"
#include "napi/call.h"

namespace fused_lora::addon {

// The frozen weight (O, I) in its format (wFormat, fused_lora/lowp.h): a Float32Array W, a
// Uint16Array of bf16 bits, an Int8Array with wScale (O), or a Uint8Array of nf4 codes with wAbsmax
// (O·I / 64; I a multiple of 64).
inline FrozenW read_frozen(const napi::Fields& f, int64_t O, int64_t I) {
  FrozenW w;
  w.O = O, w.I = I;
  const int64_t n = napi::product(O, I, f.what);
  w.format = static_cast<WFormat>(f.choice("wFormat", {"f32", "bf16", "int8", "nf4"}, 0, "ERR_DTYPE"));
  switch (w.format) {
    case WFormat::F32: w.f32 = f.floats("W", n); break;
    case WFormat::BF16: w.bf16 = f.halves("W", n); break;
    case WFormat::Int8:
      w.q8 = f.int8s("W", n);
      w.scale = f.floats("wScale", O);
      break;
    case WFormat::NF4:
      if (I % kNf4Block != 0)
        napi::fail("ERR_SHAPE", f.what, "I", "a multiple of 64 for an nf4 weight (its blocks run along I)", napi::describe(f.get("I")));
      w.q4 = f.bytes("W", (n + 1) / 2);
      w.absmax = f.floats("wAbsmax", n / kNf4Block);
      break;
  }
  return w;
}

// An activation of the call (act: 'f32' or 'bf16'): a Float32Array, or a Uint16Array of bf16 bits
// recorded in `h` (the kernels then widen it or round into it).
template <class P>
inline P* activation(const napi::Fields& f, bool bf16, const char* key, int64_t n, const uint16_t** in, uint16_t** out, bool optional = false) {
  if (!bf16) return f.floats(key, n, optional);
  uint16_t* h = f.halves(key, n, optional);
  if (in != nullptr) *in = h;
  if (out != nullptr) *out = h;
  return nullptr;
}

inline bool bf16_acts(const napi::Fields& f) { return f.choice("act", {"f32", "bf16"}, 0, "ERR_DTYPE") == 1; }

}  // namespace fused_lora::addon
