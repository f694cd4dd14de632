// The module's exports. This layer translates between JS values and the plain C++ kernels of
// native/cpu; it does no arithmetic of its own.
#include <napi.h>

#include "args.h"
#include "fused_lora/blas.h"
#include "fused_lora/gemm.h"
#include "fused_lora/isa.h"
#include "fused_lora/lora.h"
#include "fused_lora/threads.h"
#include "kernels.h"
#include "train.h"
#include "workers.h"

namespace fused_lora::addon {
namespace {

Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsFunction())
    throw Napi::TypeError::New(info.Env(), "setErrorClass: expected a constructor");
  set_error_class(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

Napi::Value BackendInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const BlasInfo& b = blas_info();
  Napi::Object blas = Napi::Object::New(env);
  blas.Set("name", b.name);
  blas.Set("path", b.path);
  blas.Set("request", b.request);
  blas.Set("reason", b.reason);
  blas.Set("threads", blas_num_threads());
  Napi::Array tried = Napi::Array::New(env, b.tried.size());
  for (size_t i = 0; i < b.tried.size(); ++i) tried.Set(static_cast<uint32_t>(i), b.tried[i]);
  blas.Set("tried", tried);
  Napi::Object out = Napi::Object::New(env);
  out.Set("blas", blas);
  out.Set("builtinKernel", isa_name(isa()));
  out.Set("builtinKernelReason", isa_choice().reason);
  out.Set("threads", num_threads());
  return out;
}

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double n = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : 0;
  if (!(n >= 1 && n <= 1024 && static_cast<int>(n) == n))
    throw make_error(env, "ERR_ARGUMENT", "setNumThreads: expected an integer in [1, 1024] for n but received " +
                                              (info.Length() > 0 && info[0].IsNumber() ? std::to_string(n) : std::string("a non-number")));
  set_num_threads(static_cast<int>(n));
  return env.Undefined();
}

// gemm({ transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, backend }): the raw GEMM, for
// tests and benchmarks that compare the built-in kernel with the BLAS in one process.
Napi::Value Gemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw make_error(env, "ERR_ARGUMENT", "gemm: expected an arguments object");
  try {
    Fields f{info[0].As<Napi::Object>(), "gemm"};
    const bool ta = f.boolean("transA", false), tb = f.boolean("transB", false);
    const int64_t M = f.dim("M"), N = f.dim("N"), K = f.dim("K");
    const int64_t lda = f.dim("lda"), ldb = f.dim("ldb"), ldc = f.dim("ldc");
    const int64_t a_rows = ta ? K : M, a_cols = ta ? M : K, b_rows = tb ? N : K, b_cols = tb ? K : N;
    if (lda < a_cols || ldb < b_cols || ldc < N)
      throw ArgError{"ERR_SHAPE", "gemm: expected lda >= " + std::to_string(a_cols) + ", ldb >= " + std::to_string(b_cols) +
                                      ", ldc >= " + std::to_string(N)};
    auto need = [&](int64_t rows, int64_t cols, int64_t ld) { return rows == 0 || cols == 0 ? 0 : product(rows - 1, ld, "gemm") + cols; };
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
      throw ArgError{"ERR_BACKEND", "gemm: expected backend 'auto', 'builtin' or 'blas' (with a BLAS loaded) but received '" +
                                        backend + "' (BLAS: " + blas_info().name + ")"};
    }
  } catch (const ArgError& e) {
    throw make_error(env, e.code, e.message);
  }
  return env.Undefined();
}

// merge({ W, A, B, I, O, r, scaling, sign }) -> boolean: false (W untouched) when a result would be
// non-finite.
Napi::Value Merge(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw make_error(env, "ERR_ARGUMENT", "merge: expected an arguments object");
  try {
    Fields f{info[0].As<Napi::Object>(), "merge"};
    const int64_t I = f.dim("I"), O = f.dim("O"), r = f.dim("r");
    float* W = f.floats("W", product(O, I, "merge"));
    const float* A = f.floats("A", product(I, r, "merge"));
    const float* B = f.floats("B", product(r, O, "merge"));
    const float scaling = static_cast<float>(f.number("scaling")), sign = static_cast<float>(f.number("sign"));
    if (sign != 1.0f && sign != -1.0f)
      throw ArgError{"ERR_ARGUMENT", "merge: expected 1 or -1 for sign but received " + std::to_string(sign)};
    return Napi::Boolean::New(env, lora_merge(W, A, B, I, O, r, scaling, sign));
  } catch (const ArgError& e) {
    throw make_error(env, e.code, e.message);
  }
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // A kernel choice asked for by name (for a test, or to rule a kernel out) must never quietly
  // become another one: an unknown FUSED_LORA_ISA fails the load, with the accepted values.
  const IsaChoice& isa = isa_choice();
  if (!isa.error.empty()) throw make_error(env, "ERR_ARGUMENT", isa.error);
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass, "setErrorClass"));
  exports.Set("backendInfo", Napi::Function::New(env, BackendInfo, "backendInfo"));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads, "setNumThreads"));
  exports.Set("gemm", Napi::Function::New(env, Gemm, "gemm"));
  exports.Set("merge", Napi::Function::New(env, Merge, "merge"));
  exports.Set("linearForward", Napi::Function::New(env, LinearForward, "linearForward"));
  exports.Set("linearBackward", Napi::Function::New(env, LinearBackward, "linearBackward"));
  exports.Set("linearForwardAsync", Napi::Function::New(env, LinearForwardAsync, "linearForwardAsync"));
  exports.Set("linearBackwardAsync", Napi::Function::New(env, LinearBackwardAsync, "linearBackwardAsync"));
  exports.Set("loraForward", Napi::Function::New(env, LoraForward, "loraForward"));
  exports.Set("loraBackward", Napi::Function::New(env, LoraBackward, "loraBackward"));
  exports.Set("loraForwardAsync", Napi::Function::New(env, LoraForwardAsync, "loraForwardAsync"));
  exports.Set("loraBackwardAsync", Napi::Function::New(env, LoraBackwardAsync, "loraBackwardAsync"));
  RegisterTrain(env, exports);
  RegisterKernels(env, exports);
  return exports;
}

}  // namespace fused_lora::addon

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return fused_lora::addon::Init(env, exports); }
NODE_API_MODULE(fused_lora, InitModule)
