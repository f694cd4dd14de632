// Threads used by our own CPU loops (the built-in GEMM, dropout, dy-pass, merge). The BLAS, when one
// is loaded, keeps its own pool; set_num_threads() sets both so they never oversubscribe the cores.
#pragma once
#include <cstdint>
#include <functional>

namespace fused_lora {

// Threads our kernels use; defaults to the hardware's core count (or FUSED_LORA_NUM_THREADS).
int num_threads();

// Sets our pool's size (and the BLAS's, through blas.h). n >= 1.
void set_num_threads(int n);

// Runs fn(begin, end) over [0, n) in at most num_threads() contiguous chunks, none shorter than
// `grain` (except the last), and returns when all are done. Safe from any thread: a call made while
// the pool is busy (another caller, or a nested call from inside fn) runs serially on the caller
// instead of waiting, so it can neither deadlock nor oversubscribe. The pool's threads poll for
// their next job (and the caller for its result) for FUSED_LORA_SPIN_US microseconds (default
// 200) before they sleep, so calls in quick succession pay no thread wake each.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t begin, int64_t end)>& fn);

}  // namespace fused_lora
