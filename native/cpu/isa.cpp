// FUSED_LORA_ISA and the CPU's features, read once. The variable can only lower the choice: asking
// for more than the CPU has runs what it has (said in `reason`), since running an unsupported
// instruction would kill the process.
#include "fused_lora/isa.h"

#include <cstdlib>

namespace fused_lora {
namespace {

Isa cpu_best() {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return Isa::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::Avx2;
#endif
  return Isa::Generic;
}

bool cpu_bf16() {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

IsaChoice choose() {
  IsaChoice c;
  c.best = cpu_best();
  c.isa = c.best;
  c.best_bf16 = cpu_bf16();
  c.bf16 = c.best_bf16;
  const char* env = std::getenv("FUSED_LORA_ISA");
  c.request = env != nullptr ? env : "";
  if (c.request.empty()) {
    c.reason = std::string("the best this CPU supports (") + isa_name(c.best) + ")";
    return c;
  }
  Isa want;
  bool want_bf16 = false;
  if (c.request == "avx512bf16") {
    want = Isa::Avx512;
    want_bf16 = true;
  } else if (c.request == "avx512") {
    want = Isa::Avx512;
  } else if (c.request == "avx2") {
    want = Isa::Avx2;
  } else if (c.request == "generic") {
    want = Isa::Generic;
  } else {
    c.error = "fused-lora: expected avx512bf16, avx512, avx2 or generic (or unset) for FUSED_LORA_ISA but received '" + c.request + "'";
    c.reason = c.error;
    return c;
  }
  c.bf16 = want_bf16 && c.best_bf16;
  if (want <= c.best && (!want_bf16 || c.best_bf16)) {
    c.isa = want;
    c.reason = "FUSED_LORA_ISA=" + c.request;
  } else {
    if (want <= c.best) c.isa = want;
    c.reason = "FUSED_LORA_ISA=" + c.request + " capped to " + (c.bf16 ? "avx512bf16" : isa_name(c.isa)) +
               ", the best this CPU supports";
  }
  return c;
}

}  // namespace

const IsaChoice& isa_choice() {
  static const IsaChoice c = choose();
  return c;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    case Isa::Generic: break;
  }
  return "generic";
}

}  // namespace fused_lora
