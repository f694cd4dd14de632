// FUSED_LORA_ISA and the CPU's features, read once. The variable can only lower the choice: asking
// for more than the CPU has runs what it has (said in `reason`), since running an unsupported
// instruction would kill the process.
#include "fused_lora/isa.h"

#include <cstdlib>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif
#if defined(__linux__) && (defined(__x86_64__) || defined(_M_X64))
#include <sys/syscall.h>
#include <unistd.h>
#endif

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

// AMX needs three things: the CPU's tiles (CPUID.7.0:EDX bit 24 AMX-TILE, bit 22 AMX-BF16), the OS
// saving their state (XCR0 bits 17-18, XTILECFG and XTILEDATA), and, on Linux, this process asking
// for the 8 KiB of tile data per thread before its first tile instruction (without it the first one
// faults). The request is process-wide; it fails where a thread's signal stack is too small for the
// larger frame, and then the tiles stay unused.
bool cpu_amx(std::string& note) {
#if defined(__x86_64__) || defined(_M_X64)
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  if (!(d & (1u << 24)) || !(d & (1u << 22))) return false;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) {
    note = "the CPU lists AMX but the OS has not enabled XSAVE";
    return false;
  }
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if ((lo & (3u << 17)) != (3u << 17)) {
    note = "the CPU lists AMX but the OS does not save the tile state (XCR0)";
    return false;
  }
#if defined(__linux__)
  constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) != 0) {
    note = "the CPU lists AMX but Linux refused this process the tile state (arch_prctl)";
    return false;
  }
  return true;
#else
  note = "AMX is used on Linux only";
  return false;
#endif
#else
  (void)note;
  return false;
#endif
}

IsaChoice choose() {
  IsaChoice c;
  c.best = cpu_best();
  c.isa = c.best;
  c.best_bf16 = cpu_bf16();
  c.bf16 = c.best_bf16;
  c.best_amx = c.best_bf16 && cpu_amx(c.amx_note);
  c.amx = c.best_amx;
  const char* env = std::getenv("FUSED_LORA_ISA");
  c.request = env != nullptr ? env : "";
  if (c.request.empty()) {
    c.reason = std::string("the best this CPU supports (") + isa_name(c.best) + ")";
    return c;
  }
  Isa want;
  bool want_bf16 = false, want_amx = false;
  if (c.request == "amx") {
    want = Isa::Avx512;
    want_bf16 = want_amx = true;
  } else if (c.request == "avx512bf16") {
    want = Isa::Avx512;
    want_bf16 = true;
  } else if (c.request == "avx512") {
    want = Isa::Avx512;
  } else if (c.request == "avx2") {
    want = Isa::Avx2;
  } else if (c.request == "generic") {
    want = Isa::Generic;
  } else {
    c.error = "fused-lora: expected amx, avx512bf16, avx512, avx2 or generic (or unset) for FUSED_LORA_ISA but received '" + c.request + "'";
    c.reason = c.error;
    return c;
  }
  c.bf16 = want_bf16 && c.best_bf16;
  c.amx = want_amx && c.best_amx;
  if (want <= c.best && (!want_bf16 || c.best_bf16) && (!want_amx || c.best_amx)) {
    c.isa = want;
    c.reason = "FUSED_LORA_ISA=" + c.request;
  } else {
    if (want <= c.best) c.isa = want;
    c.reason = "FUSED_LORA_ISA=" + c.request + " capped to " + (c.bf16 ? "avx512bf16" : isa_name(c.isa)) +
               ", the best this CPU supports" + (want_amx && !c.amx_note.empty() ? " (" + c.amx_note + ")" : "");
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
