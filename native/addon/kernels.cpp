// What the CPU kernels are made of, and how they would run a call: the chosen ISA, the built-in
// GEMM's kernel table and thresholds, the LoRA kernels' path boundaries, and the plan of one GEMM.
// Tests read their sweep's boundaries from here rather than from copies of the constants, so a
// changed block size moves the sweep with it.
#include "kernels.h"

#include "args.h"
#include "fused_lora/gemm.h"
#include "fused_lora/isa.h"
#include "fused_lora/lora.h"
#include "fused_lora/threads.h"

namespace fused_lora::addon {
namespace {

const char* path_name(builtin::Path p) {
  switch (p) {
    case builtin::Path::Scale: return "scale";
    case builtin::Path::GemvRows: return "gemv-rows";
    case builtin::Path::GemvCols: return "gemv-cols";
    case builtin::Path::Dot: return "dot";
    case builtin::Path::Blocked: return "blocked";
    case builtin::Path::None: break;
  }
  return "none";
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

// gemmPlan({ transA, transB, M, N, K, alpha }) -> how the built-in GEMM would run that call now.
Napi::Value GemmPlan(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw make_error(env, "ERR_ARGUMENT", "gemmPlan: expected an arguments object");
  try {
    Fields f{info[0].As<Napi::Object>(), "gemmPlan"};
    const Trans ta = f.boolean("transA", false) ? Trans::T : Trans::N, tb = f.boolean("transB", false) ? Trans::T : Trans::N;
    const float alpha = f.has("alpha") ? static_cast<float>(f.number("alpha")) : 1.0f;
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
    return out;
  } catch (const ArgError& e) {
    throw make_error(env, e.code, e.message);
  }
}

}  // namespace

void RegisterKernels(Napi::Env env, Napi::Object exports) {
  exports.Set("builtinKernels", Napi::Function::New(env, BuiltinKernels, "builtinKernels"));
  exports.Set("gemmPlan", Napi::Function::New(env, GemmPlan, "gemmPlan"));
}

}  // namespace fused_lora::addon
