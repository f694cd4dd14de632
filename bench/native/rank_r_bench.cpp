// Micro-benchmark of rank_r_product (native/cpu/rank_r.h), C = bias + alpha·S·R with K = r, against
// the built-in GEMM with beta = 0 and the loaded BLAS (beta = 0, and beta = 1 as the old y += s·B
// pass), cold (C flushed from cache, as inside a training step) and warm. Best of 9.
// Build: g++ -O3 -std=c++17 -Inative/include -Inative/cpu bench/native/rank_r_bench.cpp native/cpu/rank_r.cpp \
//          native/cpu/threads.cpp native/cpu/builtin_gemm/*.cpp native/cpu/isa.cpp native/cpu/gemm.cpp native/cpu/blas.cpp -ldl -pthread -o /tmp/rrb
// Run:   /tmp/rrb M N r
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#include "fused_lora/blas.h"
#include "fused_lora/gemm.h"
#include "rank_r.h"

using namespace fused_lora;

int main(int argc, char** argv) {
  const int64_t M = argc > 1 ? atol(argv[1]) : 2048, N = argc > 2 ? atol(argv[2]) : 2048, r = argc > 3 ? atol(argv[3]) : 16;
  std::vector<float> S(M * r), R(r * N), C(M * N), flush(64 << 20);
  for (auto& v : S) v = float(rand()) / RAND_MAX - 0.5f;
  for (auto& v : R) v = float(rand()) / RAND_MAX - 0.5f;
  const bool blas = blas_loaded();
  const std::vector<std::pair<const char*, std::function<void()>>> ops = {
      {"rank_r_product", [&] { rank_r_product(M, N, r, 1.0f, S.data(), r, R.data(), N, nullptr, C.data(), N); }},
      {"builtin beta 0", [&] { builtin::sgemm(Trans::N, Trans::N, M, N, r, 1.0f, S.data(), r, R.data(), N, 0.0f, C.data(), N); }},
      {"BLAS beta 0   ", [&] { sgemm(Trans::N, Trans::N, M, N, r, 1.0f, S.data(), r, R.data(), N, 0.0f, C.data(), N); }},
      {"BLAS beta 1   ", [&] { sgemm(Trans::N, Trans::N, M, N, r, 1.0f, S.data(), r, R.data(), N, 1.0f, C.data(), N); }},
  };
  std::printf("M=%ld N=%ld r=%ld, BLAS %s\n", long(M), long(N), long(r), blas ? blas_info().name.c_str() : "none");
  for (const auto& [name, fn] : ops) {
    double best[2] = {1e9, 1e9};
    for (int it = 0; it < 18; ++it) {
      const bool cold = it % 2 == 0;
      if (cold) for (auto& v : flush) v += 1.0f;
      const auto t0 = std::chrono::steady_clock::now();
      fn();
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      best[cold] = std::min(best[cold], ms);
    }
    std::printf("  %s  cold %.3f ms  warm %.3f ms\n", name, best[1], best[0]);
  }
}
