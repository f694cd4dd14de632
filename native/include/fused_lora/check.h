// FL_DCHECK(cond): an internal invariant (a buffer bound, a blocking rule) checked in the sanitizer
// and debug builds (-DFUSED_LORA_DCHECK, set by scripts/asan.sh) and compiled out of release builds,
// where the checks would sit in the GEMM's inner loops. A failed check prints where and aborts, so
// the sanitizer run fails on a broken invariant even when the overflow it guards lands in memory
// that happens to be mapped.
#pragma once

#ifdef FUSED_LORA_DCHECK
#include <cstdio>
#include <cstdlib>
#define FL_DCHECK(cond)                                                                  \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: internal check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)
#else
#define FL_DCHECK(cond) \
  do {                  \
  } while (0)
#endif
