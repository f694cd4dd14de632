// Scratch memory of the built-in GEMM, per thread. Every chunk of a parallel_for runs wholly on one
// thread and nothing here is used across a parallel_for boundary, so a thread's buffers are never
// shared by concurrent chunks (pool workers, the caller, or an unrelated thread calling sgemm at the
// same time). They grow to the largest size seen and are then reused: no allocation in steady state.
#pragma once
#include <cstddef>

namespace fused_lora {
namespace builtin {

enum class Slot {
  PackA,  // the packed A block (driver.cpp)
  PackB,  // the packed B panel; also the GEMV's accumulator and the dot path's packed Bᵀ, which
          // never run while a B panel is live on the same thread
  Vec,    // the GEMV's gathered x
};

// At least n floats of this thread's buffer `slot`, 64-byte aligned (packed slivers are read with
// aligned full-cache-line vector loads). Contents are not kept when a call needs more.
float* scratch(Slot slot, size_t n);

}  // namespace builtin
}  // namespace fused_lora
