// The GEMM exports: the raw GEMM on the BLAS or the built-in kernel (for the tests and benchmarks
// that compare the two in one process), and what the CPU kernels are made of and how they would run
// a call: the chosen ISA, the built-in GEMM's kernel table and thresholds, the LoRA kernels' path
// boundaries, the plan of one GEMM. Tests read their sweeps' boundaries from here rather than from
// copies of the constants, so a changed block size moves the sweeps with it.
#include <napi.h>

#include "entries.h"
#include "fused_lora/blas.h"
#include "fused_lora/gemm.h"
#include "fused_lora/isa.h"
#include "fused_lora/lora.h"
#include "fused_lora/threads.h"
#include "napi/call.h"

namespace fused_lora::addon {
namespace {

using napi::Fields;

// gemm({ transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, backend })
Napi::Value Gemm(const Napi::CallbackInfo& info) {
  return napi::call(info, "gemm", [](Napi::Env env, const Fields& f) -> Napi::Value {
    const bool ta = f.boolean("transA", false), tb = f.boolean("transB", false);
    const int64_t M = f.dim("M"), N = f.dim("N"), K = f.dim("K");
    const int64_t a_rows = ta ? K : M, a_cols = ta ? M : K, b_rows = tb ? N : K, b_cols = tb ? K : N;
    auto ld = [&](const char* key, int64_t width, const char* of) {
      const int64_t v = f.dim(key);
      if (v < width) napi::fail("ERR_SHAPE", f.what, key, std::string(key) + " >= " + std::to_string(width) + " (" + of + ")", napi::describe(f.get(key)));
      return v;
    };
    const int64_t lda = ld("lda", a_cols, "the row length of A"), ldb = ld("ldb", b_cols, "the row length of B"), ldc = ld("ldc", N, "N");
    auto need = [&](int64_t rows, int64_t cols, int64_t ld) { return rows == 0 || cols == 0 ? 0 : napi::product(rows - 1, ld, f.what) + cols; };
    const float* A = f.floats("A", need(a_rows, a_cols, lda));
    const float* B = f.floats("B", need(b_rows, b_cols, ldb));
    float* C = f.floats("C", need(M, N, ldc));
    const float alpha = static_cast<float>(f.number("alpha")), beta = static_cast<float>(f.number("beta"));
    const std::string backend = f.string("backend", "auto");
    const Trans TA = ta ? Trans::T : Trans::N, TB = tb ? Trans::T : Trans::N;
    if (backend == "builtin") {
      if (M > 0 && N > 0) builtin::sgemm(TA, TB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    } else if (backend == "auto" || (backend == "blas" && blas_loaded())) {
      sgemm(TA, TB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    } else {
      napi::fail("ERR_BACKEND", f.what, "backend", "'auto', 'builtin' or 'blas' (with a BLAS loaded; BLAS: " + blas_info().name + ")",
                 napi::describe(f.get("backend")));
    }
    return env.Undefined();
  });
}

const char* path_name(builtin::Path p) {
  switch (p) {
    case builtin::Path::Scale: return "scale";
    case builtin::Path::GemvRows: return "gemv-rows";
    case builtin::Path::GemvCols: return "gemv-cols";
    case builtin::Path::GemvMulti: return "gemv-multi";
    case builtin::Path::Dot: return "dot";
    case builtin::Path::Blocked: return "blocked";
    case builtin::Path::None: break;
  }
  return "none";
}

// gemmPlan({ transA, transB, M, N, K, alpha }) -> how the built-in GEMM would run that call now.
Napi::Value GemmPlan(const Napi::CallbackInfo& info) {
  return napi::call(info, "gemmPlan", [](Napi::Env env, const Fields& f) -> Napi::Value {
    const Trans ta = f.boolean("transA", false) ? Trans::T : Trans::N, tb = f.boolean("transB", false) ? Trans::T : Trans::N;
    const float alpha = static_cast<float>(f.number_or("alpha", 1));
    const builtin::Plan p = builtin::plan(ta, tb, f.dim("M"), f.dim("N"), f.dim("K"), alpha);
    Napi::Object out = Napi::Object::New(env);
    out.Set("path", path_name(p.path));
    out.Set("threads", static_cast<double>(p.threads));
    out.Set("kernel", p.kernel);
    out.Set("tm", static_cast<double>(p.tm));
    out.Set("tn", static_cast<double>(p.tn));
    out.Set("MC", static_cast<double>(p.MC));
    out.Set("NC", static_cast<double>(p.NC));
    out.Set("KC", static_cast<double>(p.KC));
    out.Set("directA", p.direct_a);
    out.Set("directB", p.direct_b);
    out.Set("lazyB", p.lazy_b);
    return out;
  });
}

// builtinKernels() -> { isa, best, request, reason, kernels: [{ mr, nr, mc, kc, nc }], dot, ..., lora }
Napi::Value BuiltinKernels(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const IsaChoice& c = isa_choice();
  const builtin::Table& t = builtin::table();
  Napi::Object out = Napi::Object::New(env);
  out.Set("isa", isa_name(t.isa));
  out.Set("best", isa_name(c.best));
  out.Set("request", c.request);
  out.Set("reason", c.reason);
  Napi::Array kernels = Napi::Array::New(env, t.kernels.size());
  for (size_t i = 0; i < t.kernels.size(); ++i) {
    const builtin::KernelShape& k = t.kernels[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("mr", k.mr);
    o.Set("nr", k.nr);
    o.Set("mc", k.mc);
    o.Set("kc", k.kc);
    o.Set("nc", k.nc);
    kernels.Set(static_cast<uint32_t>(i), o);
  }
  out.Set("kernels", kernels);
  if (t.dot_max_n > 0) {
    Napi::Object dot = Napi::Object::New(env);
    dot.Set("maxN", static_cast<double>(t.dot_max_n));
    dot.Set("kc", static_cast<double>(t.dot_kc));
    out.Set("dot", dot);
  } else {
    out.Set("dot", env.Null());
  }
  out.Set("minFlopsPerThread", t.min_flops_per_thread);
  out.Set("minGemvBytesPerThread", t.min_gemv_bytes_per_thread);
  out.Set("gemvMaxRows", static_cast<double>(t.gemv_max_rows));
  out.Set("threads", num_threads());
  const LoraPaths lp = lora_paths();
  Napi::Object lora = Napi::Object::New(env);
  lora.Set("frozenBuiltinMaxRows", static_cast<double>(lp.frozen_builtin_max_rows));
  lora.Set("dxRankRMinBytes", lp.dx_rank_r_min_bytes);
  lora.Set("rankRStreamBytes", lp.rank_r_stream_bytes);
  lora.Set("rankRTileRows", lp.rank_r_tile_rows);
  lora.Set("rankRTileCols", lp.rank_r_tile_cols);
  lora.Set("rankRIsa", isa_name(lp.rank_r_isa));
  out.Set("lora", lora);
  return out;
}

}  // namespace

void RegisterGemm(Napi::Env env, Napi::Object exports) {
  napi::add_functions(env, exports, {{"gemm", Gemm}, {"gemmPlan", GemmPlan}, {"builtinKernels", BuiltinKernels}});
}

}  // namespace fused_lora::addon
