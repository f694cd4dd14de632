// Finding a BLAS with dlopen. Candidates are tried in order and every attempt is recorded, so that
// backendInfo() can say not only what was chosen but why the others were not.
#include "fused_lora/blas.h"

#include <dlfcn.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "fused_lora/threads.h"

namespace fused_lora {
namespace {

// CBLAS enum values are fixed by the standard interface, identical in every implementation.
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

using SgemmFn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float,
                         float*, int);
using SetThreadsFn = void (*)(int);
using GetThreadsFn = int (*)();

struct Candidate {
  const char* name;
  std::vector<const char*> files;
};

struct Blas {
  BlasInfo info;
  SgemmFn sgemm = nullptr;
  SetThreadsFn set_threads = nullptr;
  GetThreadsFn get_threads = nullptr;
  int threads = 0;  // what we last asked for; the BLAS's own answer wins where it has one
};

std::vector<Candidate> candidates() {
  return {
#if defined(__APPLE__)
      {"accelerate", {"/System/Library/Frameworks/Accelerate.framework/Accelerate"}},
#endif
      {"openblas", {"libopenblas.so.0", "libopenblas.so", "libopenblas.dylib", "/opt/homebrew/opt/openblas/lib/libopenblas.dylib",
                    "/usr/local/opt/openblas/lib/libopenblas.dylib"}},
      {"mkl", {"libmkl_rt.so.2", "libmkl_rt.so", "libmkl_rt.2.dylib", "libmkl_rt.dylib"}},
      {"blis", {"libblis.so.4", "libblis.so", "libblis.dylib"}},
      {"blas", {"libblas.so.3", "libcblas.so.3"}},
  };
}

// Debian's libblas.so.3 is an alternatives link: OpenBLAS, BLIS or ATLAS when one is installed, else
// the reference BLAS, which is a triple loop and slower than our built-in GEMM. Auto mode keeps it
// only when it resolves to an optimised library; naming it explicitly always loads it.
bool looks_optimised(const std::string& real) {
  for (const char* tag : {"openblas", "blis", "mkl", "atlas", "Accelerate"})
    if (real.find(tag) != std::string::npos) return true;
  return false;
}

std::string resolved_path(void* handle, void* sym) {
  Dl_info dl{};
  if (sym != nullptr && dladdr(sym, &dl) != 0 && dl.dli_fname != nullptr) {
    char buf[PATH_MAX];
    if (realpath(dl.dli_fname, buf) != nullptr) return buf;
    return dl.dli_fname;
  }
  return "";
}

// Tries one file; on success fills b and returns true, otherwise records why in b.info.tried.
bool try_load(Blas& b, const std::string& name, const std::string& file, bool explicit_request) {
  void* h = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (h == nullptr) {
    const char* err = dlerror();
    b.info.tried.push_back(name + " (" + file + "): not found" + (err ? std::string(": ") + err : ""));
    return false;
  }
  auto sgemm = reinterpret_cast<SgemmFn>(dlsym(h, "cblas_sgemm"));
  if (sgemm == nullptr) {
    b.info.tried.push_back(name + " (" + file + "): loaded, but has no cblas_sgemm");
    dlclose(h);
    return false;
  }
  std::string real = resolved_path(h, reinterpret_cast<void*>(sgemm));
  if (name == "blas" && !explicit_request && !looks_optimised(real)) {
    b.info.tried.push_back(name + " (" + file + " -> " + real +
                           "): skipped, looks like the reference BLAS (slower than the built-in GEMM)");
    dlclose(h);
    return false;
  }
  b.sgemm = sgemm;
  b.info.builtin = false;
  b.info.path = real.empty() ? file : real;
  b.info.name = name;
  if (name == "blas") {  // a generic CBLAS: name it after what it resolved to
    for (const char* tag : {"openblas", "blis", "mkl", "atlas"})
      if (real.find(tag) != std::string::npos) b.info.name = tag;
  }
  b.set_threads = reinterpret_cast<SetThreadsFn>(dlsym(h, "openblas_set_num_threads"));
  b.get_threads = reinterpret_cast<GetThreadsFn>(dlsym(h, "openblas_get_num_threads"));
  if (b.set_threads == nullptr) b.set_threads = reinterpret_cast<SetThreadsFn>(dlsym(h, "bli_thread_set_num_threads"));
  if (b.get_threads == nullptr) b.get_threads = reinterpret_cast<GetThreadsFn>(dlsym(h, "bli_thread_get_num_threads"));
  if (b.set_threads == nullptr) b.set_threads = reinterpret_cast<SetThreadsFn>(dlsym(h, "MKL_Set_Num_Threads"));
  if (b.get_threads == nullptr) b.get_threads = reinterpret_cast<GetThreadsFn>(dlsym(h, "MKL_Get_Max_Threads"));
  b.info.tried.push_back(name + " (" + file + "): loaded " + b.info.path);
  return true;  // the handle stays open for the life of the process
}

void use_builtin(Blas& b, const std::string& reason) {
  b.info.builtin = true;
  b.info.name = "builtin";
  b.info.path.clear();
  b.info.reason = reason;
}

// OpenBLAS's idle workers spin (a sched_yield loop) for 2^OPENBLAS_THREAD_TIMEOUT cycles after each
// call before they sleep; the default, 28, is ~0.1 s. A LoRA step alternates BLAS calls (the frozen
// GEMMs) with our own kernels (the rank-r products) on the same cores, so the spinning took a core
// from ours: on 2 cores the rank-r products ran at 2.1-3.2 ms each inside a step against 1.3-1.6 ms
// with the timeout at its minimum, 4 (bench/NOTES.md). OpenBLAS reads the variable when it loads, so
// it is set just before the first dlopen; a value the user set is kept, and an OpenBLAS some other
// module already loaded into the process keeps its own.
void shorten_openblas_spin() { setenv("OPENBLAS_THREAD_TIMEOUT", "4", /*overwrite=*/0); }

void load(Blas& b) {
  shorten_openblas_spin();
  const char* env = std::getenv("FUSED_LORA_BLAS");
  std::string req = (env != nullptr && *env != '\0') ? env : "auto";
  b.info.request = req;
  if (req == "builtin") {
    use_builtin(b, "FUSED_LORA_BLAS=builtin");
  } else if (req.find('/') != std::string::npos) {  // a path to a library
    if (try_load(b, "blas", req, true))
      b.info.reason = "FUSED_LORA_BLAS=" + req;
    else
      use_builtin(b, "FUSED_LORA_BLAS=" + req + " could not be loaded; using the built-in GEMM");
  } else {
    bool matched = false;
    for (const Candidate& c : candidates()) {
      if (req != "auto" && req != c.name) continue;
      matched = true;
      for (const char* f : c.files) {
        if (try_load(b, c.name, f, req != "auto")) {
          b.info.reason = req == "auto" ? "first optimised BLAS found (order: accelerate on macOS, openblas, mkl, blis, libblas.so.3)"
                                        : "FUSED_LORA_BLAS=" + req;
          break;
        }
      }
      if (!b.info.builtin) break;
    }
    if (b.info.builtin) {
      if (!matched)
        use_builtin(b, "FUSED_LORA_BLAS=" + req + " is not one of auto|openblas|mkl|blis|accelerate|builtin|<path>; using the built-in GEMM");
      else if (req == "auto")
        use_builtin(b, "no BLAS library found; using the built-in GEMM");
      else
        use_builtin(b, "FUSED_LORA_BLAS=" + req + " was not found; using the built-in GEMM");
    }
  }
  if (!b.info.builtin && b.set_threads != nullptr) {
    b.threads = num_threads();
    b.set_threads(b.threads);
  }
}

Blas& blas() {
  static Blas b;
  static std::once_flag once;
  std::call_once(once, [] { load(b); });
  return b;
}

}  // namespace

const BlasInfo& blas_info() { return blas().info; }

bool blas_loaded() { return !blas().info.builtin; }

void blas_sgemm(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
                int ldb, float beta, float* C, int ldc) {
  blas().sgemm(kRowMajor, transA ? kTrans : kNoTrans, transB ? kTrans : kNoTrans, M, N, K, alpha, A, lda, B, ldb,
               beta, C, ldc);
}

int blas_num_threads() {
  Blas& b = blas();
  if (b.info.builtin) return 0;
  if (b.get_threads != nullptr) return b.get_threads();
  return b.threads;
}

void blas_set_num_threads(int n) {
  Blas& b = blas();
  b.threads = n;
  if (!b.info.builtin && b.set_threads != nullptr) b.set_threads(n);
}

}  // namespace fused_lora
