// The BLAS, found at run time. A prebuilt addon links no BLAS: it dlopens the best one it finds, so
// the same binary uses MKL on one machine, OpenBLAS on another and the built-in GEMM where neither
// is installed. FUSED_LORA_BLAS=auto|openblas|mkl|blis|accelerate|builtin|/path/to/lib.so overrides.
#pragma once
#include <string>
#include <vector>

namespace fused_lora {

struct BlasInfo {
  std::string name;     // "openblas", "mkl", "blis", "accelerate", "blas" (another CBLAS) or "builtin"
  std::string path;     // the library file dlopen'ed, empty for builtin
  std::string request;  // what FUSED_LORA_BLAS asked for ("auto" when unset)
  std::string reason;   // one line: why this one was chosen
  std::vector<std::string> tried;  // each candidate tried and what happened
  bool builtin = true;
};

// Loads the BLAS on first use (thread-safe) and returns what was chosen.
const BlasInfo& blas_info();

// True when sgemm() goes to a loaded BLAS rather than the built-in GEMM.
bool blas_loaded();

// Calls the loaded BLAS's cblas_sgemm (row-major). Only valid when blas_loaded().
void blas_sgemm(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int lda,
                const float* B, int ldb, float beta, float* C, int ldc);

// Threads the loaded BLAS uses (its own get function where it has one), and setting them.
int blas_num_threads();
void blas_set_num_threads(int n);

}  // namespace fused_lora
