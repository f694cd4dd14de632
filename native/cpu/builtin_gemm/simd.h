// The x86 intrinsics of the per-ISA kernels, where the target is x86-64. The addon is built without
// -march: each function that uses them carries its own target attribute ("avx512f", "avx2,fma") and
// runs only where isa() chose its kernel set (kernels.cpp).
#pragma once

#if defined(__x86_64__) || defined(_M_X64)
#define FL_X86 1
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized on their own _mm512_undefined_ps() (a
// self-initialised placeholder) wherever a shuffle intrinsic is inlined; the warning points into
// the header, so it is silenced from the include on.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#else
#define FL_X86 0
#endif
