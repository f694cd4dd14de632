// The instruction set the CPU kernels are compiled for at run time. The addon is built without
// -march, so every SIMD kernel (the built-in GEMM's micro-kernels, its pack transposer, GEMV and dot
// paths, the rank-r products) exists in an AVX-512, an AVX2+FMA and a portable version, and one
// choice, made once per process, picks among them all: the best the CPU supports, capped by
// FUSED_LORA_ISA=avx512|avx2|generic (for testing the lower paths on a newer CPU, or diagnosing one).
#pragma once
#include <string>

namespace fused_lora {

enum class Isa : int { Generic = 0, Avx2 = 1, Avx512 = 2 };

struct IsaChoice {
  Isa isa = Isa::Generic;   // what the kernels run
  Isa best = Isa::Generic;  // the best this CPU (and this build) supports
  std::string request;      // FUSED_LORA_ISA as read ("" when unset)
  std::string reason;       // one line: why `isa`
  std::string error;        // non-empty when FUSED_LORA_ISA is not a known value (the addon refuses to load)
};

// Reads FUSED_LORA_ISA and the CPU once (thread-safe) and returns the choice. With an unknown value
// the kernels run `best` and `error` says what was wrong.
const IsaChoice& isa_choice();

inline Isa isa() { return isa_choice().isa; }

// "avx512", "avx2" or "generic".
const char* isa_name(Isa isa);

}  // namespace fused_lora
