// Single-precision GEMM in row-major layout, the one primitive every LoRA kernel is built from.
#pragma once
#include <cstdint>
#include <vector>

#include "fused_lora/isa.h"

namespace fused_lora {

enum class Trans : uint8_t { N, T };

// C(M×N) = alpha · op(A)(M×K) · op(B)(K×N) + beta · C, all row-major.
//   op(A) = A (M×K, lda >= K) or Aᵀ with A stored K×M (lda >= M); likewise op(B) with ldb.
//   beta == 0 overwrites C without reading it (NaN in C does not propagate), as BLAS does.
//   M, N, K, lda, ldb, ldc must fit in int32 (checked by the caller: the addon's validation).
// Dispatches to the BLAS chosen at load time (blas.h), or to the built-in GEMM.
void sgemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

namespace builtin {
// The built-in GEMM: packed, cache-blocked, vectorised (AVX-512 / AVX2+FMA chosen at run time, a
// portable path elsewhere; isa.h) and multithreaded through parallel_for. Same contract as sgemm above.
void sgemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// What the built-in GEMM is made of (the kernel set of the chosen ISA, isa.h), and how it would run
// a call. For backendInfo, and for the tests that place their shapes on every blocking boundary:
// they read the boundaries from here, so they follow the code when a block size changes.
struct KernelShape {
  int mr, nr;      // the micro-tile
  int mc, kc, nc;  // cache blocking, whole slivers
};
struct Table {
  Isa isa;
  std::vector<KernelShape> kernels;  // [0] the default, then the alternates for skinny outputs
  int64_t dot_max_n = 0, dot_kc = 0;  // the dot path (narrow outputs of a row-major A); 0: none on this ISA
  double min_flops_per_thread = 0;       // a GEMM takes one more thread per this many flops
  double min_gemv_bytes_per_thread = 0;  // a GEMV takes one more thread per this many bytes of its matrix
  int64_t gemv_max_rows = 0;  // x·Wᵀ for up to this many rows of x is one GEMV over them all (gemv-multi)
};
const Table& table();

enum class Path : uint8_t { None, Scale, GemvRows, GemvCols, GemvMulti, Dot, Blocked };
struct Plan {
  Path path = Path::None;
  int64_t threads = 1;
  int kernel = -1;                 // Blocked: index into table().kernels
  int64_t tm = 1, tn = 1;          // Blocked: the grid of threads over C
  int64_t MC = 0, NC = 0, KC = 0;  // Blocked: the blocking of the first thread's share of C
  bool direct_a = false, direct_b = false;  // Blocked: that operand is read in place, not packed
  bool lazy_b = false;                      // Blocked: B packed a sliver at a time (one block of A rows)
};
// The plan sgemm above follows for these sizes (with the current thread count).
Plan plan(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha);
}  // namespace builtin

}  // namespace fused_lora
