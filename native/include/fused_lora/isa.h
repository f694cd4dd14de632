// The instruction set the CPU kernels are compiled for at run time. The addon is built without
// -march, so every SIMD kernel (the built-in GEMM's micro-kernels, its pack transposer, GEMV and dot
// paths, the rank-r products) exists in an AVX-512, an AVX2+FMA and a portable version, and one
// choice, made once per process, picks among them all: the best the CPU supports, capped by
// FUSED_LORA_ISA=amx|avx512bf16|avx512|avx2|generic (for testing the lower paths on a newer CPU, or
// diagnosing one). amx and avx512bf16 are AVX-512 plus a bf16 dot product: they change only the
// reduced-precision frozen-weight GEMM (lowp.h), whose AMX-BF16 tile kernel (amx) or vdpbf16ps
// micro-kernel (avx512bf16) they force; every fp32 kernel is the same as under avx512, and avx512
// runs that GEMM on the AVX-512F kernels, widening bf16 to fp32. Unset, lowp.h times the ones the CPU
// has at first use and runs the fastest.
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
  bool bf16 = false;        // vdpbf16ps may run (isa is Avx512, the CPU has avx512_bf16, the cap allows it; lowp.h decides)
  bool best_bf16 = false;   // the CPU has avx512_bf16 (with AVX-512F)
  bool amx = false;         // AMX-BF16 tiles may run (best_amx, and the cap allows them)
  bool best_amx = false;    // the CPU has AMX-TILE and AMX-BF16, the OS saves the tile state, and
                            // this process was granted it (Linux: arch_prctl ARCH_REQ_XCOMP_PERM)
  std::string amx_note;     // why best_amx is false where the CPU lists AMX ("" otherwise)
};

// Reads FUSED_LORA_ISA and the CPU once (thread-safe) and returns the choice. With an unknown value
// the kernels run `best` and `error` says what was wrong.
const IsaChoice& isa_choice();

inline Isa isa() { return isa_choice().isa; }

// "avx512", "avx2" or "generic".
const char* isa_name(Isa isa);


}  // namespace fused_lora
