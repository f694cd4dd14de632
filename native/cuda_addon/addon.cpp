// The CUDA addon's exports. Translation only: read and check arguments (shapes against buffer sizes,
// so no kernel can be handed a region past a buffer's end), call native/cuda, turn a failure into an
// error with a code. Every op is enqueued on the addon's stream and returns at once; download() and
// synchronize() wait on the JS thread, downloadAsync() and synchronizeAsync() off it.
#include <napi.h>

#include "handles.h"
#include "workers.h"

namespace fused_lora::cuda_addon {
namespace {

using fc::DType;
using fc::Status;

Args args_of(const Napi::CallbackInfo& info, const char* op) {
  if (info.Length() < 1 || !info[0].IsObject())
    throw make_error(info.Env(), "ERR_ARGUMENT", std::string(op) + ": expected an options object");
  return Args{info.Env(), info[0].As<Napi::Object>(), op};
}

void ok_or_throw(Napi::Env env, Status st, const char* op) {
  if (st != Status::Ok) throw_status(env, st, op);
}

Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsFunction())
    throw Napi::TypeError::New(info.Env(), "setErrorClass: expected a constructor");
  set_error_class(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

Napi::Value DeviceInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const fc::DeviceInfo& d = fc::device_info();
  Napi::Object o = Napi::Object::New(env);
  o.Set("available", d.available);
  o.Set("reason", d.reason);
  o.Set("deviceCount", d.device_count);
  o.Set("name", d.name);
  o.Set("computeCapability", d.major ? std::to_string(d.major) + "." + std::to_string(d.minor) : std::string());
  o.Set("memoryBytes", static_cast<double>(d.memory_bytes));
  o.Set("multiprocessors", d.multiprocessors);
  o.Set("driverVersion", d.driver_version);
  o.Set("runtimeVersion", d.runtime_version);
  return o;
}

Napi::Value MemoryStats(const Napi::CallbackInfo& info) {
  fc::AllocatorStats s = fc::allocator_stats();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("allocatedBytes", static_cast<double>(s.allocated_bytes));
  o.Set("cachedBytes", static_cast<double>(s.cached_bytes));
  o.Set("reservedBytes", static_cast<double>(s.reserved_bytes));
  return o;
}

Napi::Value EmptyCache(const Napi::CallbackInfo& info) {
  ok_or_throw(info.Env(), fc::allocator_empty_cache(), "emptyCache");
  return info.Env().Undefined();
}

Napi::Value RankPad(const Napi::CallbackInfo& info) {
  Args a = args_of(info, "rankPad");
  return Napi::Number::New(info.Env(), static_cast<double>(fc::rank_pad(a.dim("r"))));
}

// A (rows, cols, ld) region of `name` in dtype t: reads the dims and checks the buffer holds it.
struct Region { DeviceBuffer* buf; int64_t rows, cols, ld; };
Region region(const Args& a, const char* name, DType t) {
  int64_t rows = a.dim("rows"), cols = a.dim("cols"), ld = a.int_or("ld", cols);
  if (ld < cols) throw make_error(a.env, "ERR_SHAPE", std::string(a.op) + ": expected ld >= cols");
  return Region{a.buffer(name, span_bytes(rows, cols, ld, t)), rows, cols, ld};
}

// upload({ buffer, dtype, data: Float32Array, rows, cols, ld }) — or data: Int32Array with dtype
// 'int32' for labels (raw copy).
Napi::Value Upload(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a = args_of(info, "upload");
  Napi::Value data = a.obj.Get("data");
  Napi::Value dt = a.obj.Get("dtype");
  if (dt.IsString() && dt.As<Napi::String>().Utf8Value() == "int32") {
    if (!data.IsTypedArray() || data.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      throw make_error(env, "ERR_ARGUMENT", "upload: expected an Int32Array for data with dtype 'int32'");
    Napi::Int32Array d = data.As<Napi::Int32Array>();
    DeviceBuffer* b = a.buffer("buffer", d.ElementLength() * 4);
    ok_or_throw(env, fc::upload_bytes(b->ptr(), d.Data(), d.ElementLength() * 4, default_stream(env)), "upload");
    return env.Undefined();
  }
  DType t = a.dtype("dtype");
  if (!data.IsTypedArray() || data.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw make_error(env, "ERR_ARGUMENT", "upload: expected a Float32Array for data");
  Napi::Float32Array d = data.As<Napi::Float32Array>();
  Region r = region(a, "buffer", t);
  if (static_cast<int64_t>(d.ElementLength()) != r.rows * r.cols)
    throw make_error(env, "ERR_SHAPE", "upload: expected " + std::to_string(r.rows * r.cols) +
                                           " elements in data but received " + std::to_string(d.ElementLength()));
  ok_or_throw(env, fc::upload_f32(r.buf->ptr(), t, r.ld, d.Data(), r.cols, r.rows, r.cols, default_stream(env)), "upload");
  return env.Undefined();
}

// download({ buffer, dtype, rows, cols, ld }) → Float32Array (rows·cols), waiting on the JS thread.
Napi::Value Download(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a = args_of(info, "download");
  DType t = a.dtype("dtype");
  Region r = region(a, "buffer", t);
  Napi::Float32Array out = Napi::Float32Array::New(env, static_cast<size_t>(r.rows * r.cols));
  ok_or_throw(env, fc::download_f32(out.Data(), r.cols, r.buf->ptr(), t, r.ld, r.rows, r.cols, default_stream(env)),
              "download");
  return out;
}

// fill({ buffer, dtype, rows, cols, ld, value })
Napi::Value Fill(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a = args_of(info, "fill");
  DType t = a.dtype("dtype");
  Region r = region(a, "buffer", t);
  ok_or_throw(env, fc::fill(r.buf->ptr(), t, r.ld, r.rows, r.cols, static_cast<float>(a.num("value", 0)),
                            default_stream(env)), "fill");
  return env.Undefined();
}

// cast({ dst, dstDtype, ldDst, src, srcDtype, ldSrc, rows, cols })
Napi::Value Cast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a = args_of(info, "cast");
  DType dt = a.dtype("dstDtype"), st = a.dtype("srcDtype");
  int64_t rows = a.dim("rows"), cols = a.dim("cols");
  int64_t ldd = a.int_or("ldDst", cols), lds = a.int_or("ldSrc", cols);
  DeviceBuffer* d = a.buffer("dst", span_bytes(rows, cols, ldd, dt));
  DeviceBuffer* s = a.buffer("src", span_bytes(rows, cols, lds, st));
  ok_or_throw(env, fc::cast(d->ptr(), dt, ldd, s->ptr(), st, lds, rows, cols, default_stream(env)), "cast");
  return env.Undefined();
}

// gemm({ dtype, math, bLayout: 'nt'|'nn', M, N, K, alpha, beta, A, lda, B, ldb, bias, C, ldc })
Napi::Value Gemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a = args_of(info, "gemm");
  fc::GemmArgs g;
  g.t = a.dtype("dtype");
  g.math = a.math();
  Napi::Value lay = a.obj.Get("bLayout");
  std::string ls = lay.IsString() ? lay.As<Napi::String>().Utf8Value() : "nt";
  if (ls != "nt" && ls != "nn") throw make_error(env, "ERR_ARGUMENT", "gemm: expected 'nt' or 'nn' for bLayout");
  g.b_layout = ls == "nn" ? fc::BLayout::NN : fc::BLayout::NT;
  g.M = a.dim("M"); g.N = a.dim("N"); g.K = a.dim("K");
  g.lda = a.int_or("lda", g.K);
  g.ldb = a.int_or("ldb", g.b_layout == fc::BLayout::NN ? g.N : g.K);
  g.ldc = a.int_or("ldc", g.N);
  if (g.lda < g.K || g.ldc < g.N || g.ldb < (g.b_layout == fc::BLayout::NN ? g.N : g.K))
    throw make_error(env, "ERR_SHAPE", "gemm: a leading dimension is below its row width");
  g.alpha = static_cast<float>(a.num("alpha", 1));
  g.beta = static_cast<float>(a.num("beta", 0));
  g.A = a.buffer("A", span_bytes(g.M, g.K, g.lda, g.t))->ptr();
  g.B = g.b_layout == fc::BLayout::NN ? a.buffer("B", span_bytes(g.K, g.N, g.ldb, g.t))->ptr()
                                      : a.buffer("B", span_bytes(g.N, g.K, g.ldb, g.t))->ptr();
  DeviceBuffer* bias = a.buffer("bias", span_bytes(1, g.N, g.N, g.t), true);
  g.bias = bias ? bias->ptr() : nullptr;
  g.C = a.buffer("C", span_bytes(g.M, g.N, g.ldc, g.t))->ptr();
  ok_or_throw(env, fc::gemm(g, default_stream(env)), "gemm");
  return env.Undefined();
}

// The layer's dims and the compute dtype, shared by the LoRA ops.
struct Layer { DType t; fc::LoraDims d; int64_t r_pad, ld_x, ld_dy, w_rows; };
Layer layer_of(const Args& a) {
  Layer l;
  l.t = a.dtype("dtype");
  l.d.M = a.dim("M"); l.d.I = a.dim("I"); l.d.O = a.dim("O"); l.d.r = a.dim("r");
  l.d.scaling = static_cast<float>(a.num("scaling", 1));
  l.r_pad = fc::rank_pad(l.d.r);
  l.ld_x = l.d.I + l.r_pad;
  l.ld_dy = l.d.O + l.r_pad;
  l.w_rows = l.d.O + l.r_pad;
  return l;
}
size_t f32(int64_t n) { return static_cast<size_t>(n) * 4; }

// refreshWExt({ dtype, I, O, r, scaling, wExt, A, B }) — M is not needed: pass 1.
Napi::Value RefreshWExt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a = args_of(info, "refreshWExt");
  DType t = a.dtype("dtype");
  int64_t I = a.dim("I"), O = a.dim("O"), r = a.dim("r");
  int64_t ld = I + fc::rank_pad(r);
  DeviceBuffer* w = a.buffer("wExt", span_bytes(O + fc::rank_pad(r), ld, ld, t));
  DeviceBuffer* A = a.buffer("A", f32(I * r));
  DeviceBuffer* B = a.buffer("B", f32(r * O));
  ok_or_throw(env, fc::refresh_w_ext(t, I, O, r, w->ptr(), ld, static_cast<float*>(A->ptr()), static_cast<float*>(B->ptr()),
                                     static_cast<float>(a.num("scaling", 1)), default_stream(env)), "refreshWExt");
  return env.Undefined();
}

// loraForwardFused({ dtype, math, M, I, O, r, scaling, xExt, wExt, bias?, A, y, ldy? })
Napi::Value LoraForwardFused(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a = args_of(info, "loraForwardFused");
  Layer l = layer_of(a);
  int64_t ldy = a.int_or("ldy", l.d.O);
  if (ldy < l.d.O) throw make_error(env, "ERR_SHAPE", "loraForwardFused: expected ldy >= O");
  DeviceBuffer* x = a.buffer("xExt", span_bytes(l.d.M, l.ld_x, l.ld_x, l.t));
  DeviceBuffer* w = a.buffer("wExt", span_bytes(l.w_rows, l.ld_x, l.ld_x, l.t));
  DeviceBuffer* bias = a.buffer("bias", span_bytes(1, l.d.O, l.d.O, l.t), true);
  DeviceBuffer* A = a.buffer("A", f32(l.d.I * l.d.r));
  DeviceBuffer* y = a.buffer("y", span_bytes(l.d.M, l.d.O, ldy, l.t));
  ok_or_throw(env, fc::lora_forward_fused(l.t, l.d, x->ptr(), w->ptr(), bias ? bias->ptr() : nullptr,
                                          static_cast<float*>(A->ptr()), y->ptr(), ldy, a.math(), default_stream(env)),
              "loraForwardFused");
  return env.Undefined();
}

// loraBackwardFused({ dtype, math, M, I, O, r, scaling, xExt, dyExt, wExt, B, dsWork, dA, dB, dx?, lddx?, accumulate })
Napi::Value LoraBackwardFused(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a = args_of(info, "loraBackwardFused");
  Layer l = layer_of(a);
  int64_t lddx = a.int_or("lddx", l.d.I);
  if (lddx < l.d.I) throw make_error(env, "ERR_SHAPE", "loraBackwardFused: expected lddx >= I");
  DeviceBuffer* x = a.buffer("xExt", span_bytes(l.d.M, l.ld_x, l.ld_x, l.t));
  DeviceBuffer* dy = a.buffer("dyExt", span_bytes(l.d.M, l.ld_dy, l.ld_dy, l.t));
  DeviceBuffer* w = a.buffer("wExt", span_bytes(l.w_rows, l.ld_x, l.ld_x, l.t));
  DeviceBuffer* B = a.buffer("B", f32(l.d.r * l.d.O));
  DeviceBuffer* ds = a.buffer("dsWork", f32(l.d.M * l.d.r));
  DeviceBuffer* dA = a.buffer("dA", f32(l.d.I * l.d.r));
  DeviceBuffer* dB = a.buffer("dB", f32(l.d.r * l.d.O));
  DeviceBuffer* dx = a.buffer("dx", span_bytes(l.d.M, l.d.I, lddx, l.t), true);
  ok_or_throw(env, fc::lora_backward_fused(l.t, l.d, x->ptr(), dy->ptr(), w->ptr(), static_cast<float*>(B->ptr()),
                                           static_cast<float*>(ds->ptr()), static_cast<float*>(dA->ptr()),
                                           static_cast<float*>(dB->ptr()), dx ? dx->ptr() : nullptr, lddx,
                                           a.flag("accumulate", false), a.math(), default_stream(env)),
              "loraBackwardFused");
  return env.Undefined();
}

// loraForwardUnfused({ dtype, math, M, I, O, r, scaling, x, W, bias?, A, B, s, u, y }) — A, B in the compute dtype.
Napi::Value LoraForwardUnfused(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a = args_of(info, "loraForwardUnfused");
  Layer l = layer_of(a);
  const auto& d = l.d;
  DeviceBuffer* x = a.buffer("x", span_bytes(d.M, d.I, d.I, l.t));
  DeviceBuffer* W = a.buffer("W", span_bytes(d.O, d.I, d.I, l.t));
  DeviceBuffer* bias = a.buffer("bias", span_bytes(1, d.O, d.O, l.t), true);
  DeviceBuffer* A = a.buffer("A", span_bytes(d.I, d.r, d.r, l.t));
  DeviceBuffer* B = a.buffer("B", span_bytes(d.r, d.O, d.O, l.t));
  DeviceBuffer* s = a.buffer("s", span_bytes(d.M, d.r, d.r, l.t));
  DeviceBuffer* u = a.buffer("u", span_bytes(d.M, d.O, d.O, l.t));
  DeviceBuffer* y = a.buffer("y", span_bytes(d.M, d.O, d.O, l.t));
  ok_or_throw(env, fc::lora_forward_unfused(l.t, d, x->ptr(), W->ptr(), bias ? bias->ptr() : nullptr, A->ptr(), B->ptr(),
                                            s->ptr(), u->ptr(), y->ptr(), a.math(), default_stream(env)),
              "loraForwardUnfused");
  return env.Undefined();
}

// loraBackwardUnfused({ dtype, math, M, I, O, r, scaling, x, s, dy, W, A, B, du, ds, dA, dB, dx?, accumulate })
Napi::Value LoraBackwardUnfused(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a = args_of(info, "loraBackwardUnfused");
  Layer l = layer_of(a);
  const auto& d = l.d;
  DeviceBuffer* x = a.buffer("x", span_bytes(d.M, d.I, d.I, l.t));
  DeviceBuffer* s = a.buffer("s", span_bytes(d.M, d.r, d.r, l.t));
  DeviceBuffer* dy = a.buffer("dy", span_bytes(d.M, d.O, d.O, l.t));
  DeviceBuffer* W = a.buffer("W", span_bytes(d.O, d.I, d.I, l.t));
  DeviceBuffer* A = a.buffer("A", span_bytes(d.I, d.r, d.r, l.t));
  DeviceBuffer* B = a.buffer("B", span_bytes(d.r, d.O, d.O, l.t));
  DeviceBuffer* du = a.buffer("du", span_bytes(d.M, d.O, d.O, l.t));
  DeviceBuffer* ds = a.buffer("ds", span_bytes(d.M, d.r, d.r, l.t));
  DeviceBuffer* dA = a.buffer("dA", f32(d.I * d.r));
  DeviceBuffer* dB = a.buffer("dB", f32(d.r * d.O));
  DeviceBuffer* dx = a.buffer("dx", span_bytes(d.M, d.I, d.I, l.t), true);
  ok_or_throw(env, fc::lora_backward_unfused(l.t, d, x->ptr(), s->ptr(), dy->ptr(), W->ptr(), A->ptr(), B->ptr(),
                                             du->ptr(), ds->ptr(), static_cast<float*>(dA->ptr()),
                                             static_cast<float*>(dB->ptr()), dx ? dx->ptr() : nullptr,
                                             a.flag("accumulate", false), a.math(), default_stream(env)),
              "loraBackwardUnfused");
  return env.Undefined();
}

// adamw({ n, param, grad, m, v, lr, beta1, beta2, eps, weightDecay, step }) — fp32 buffers.
Napi::Value AdamW(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a = args_of(info, "adamw");
  int64_t n = a.dim("n");
  auto p = static_cast<float*>(a.buffer("param", f32(n))->ptr());
  auto g = static_cast<float*>(a.buffer("grad", f32(n))->ptr());
  auto m = static_cast<float*>(a.buffer("m", f32(n))->ptr());
  auto v = static_cast<float*>(a.buffer("v", f32(n))->ptr());
  ok_or_throw(env, fc::adamw(n, p, g, m, v, static_cast<float>(a.num("lr", 1e-3)), static_cast<float>(a.num("beta1", 0.9)),
                             static_cast<float>(a.num("beta2", 0.999)), static_cast<float>(a.num("eps", 1e-8)),
                             static_cast<float>(a.num("weightDecay", 0.01)), a.dim("step"), default_stream(env)),
              "adamw");
  return env.Undefined();
}

// mseLoss({ dtype, n, pred, target, loss (fp32 scalar), dpred? })
Napi::Value MseLoss(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a = args_of(info, "mseLoss");
  DType t = a.dtype("dtype");
  int64_t n = a.dim("n");
  size_t nb = static_cast<size_t>(n) * fc::dtype_size(t);
  DeviceBuffer* dp = a.buffer("dpred", nb, true);
  ok_or_throw(env, fc::mse_loss(t, n, a.buffer("pred", nb)->ptr(), a.buffer("target", nb)->ptr(),
                                static_cast<float*>(a.buffer("loss", 4)->ptr()), dp ? dp->ptr() : nullptr,
                                default_stream(env)), "mseLoss");
  return env.Undefined();
}

// crossEntropyLoss({ dtype, N, C, logits, ld?, labels (int32), loss, dlogits?, ldd? })
Napi::Value CrossEntropyLoss(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args a = args_of(info, "crossEntropyLoss");
  DType t = a.dtype("dtype");
  int64_t N = a.dim("N"), C = a.dim("C"), ld = a.int_or("ld", C), ldd = a.int_or("ldd", C);
  if (ld < C || ldd < C) throw make_error(env, "ERR_SHAPE", "crossEntropyLoss: expected ld, ldd >= C");
  DeviceBuffer* dl = a.buffer("dlogits", span_bytes(N, C, ldd, t), true);
  ok_or_throw(env, fc::cross_entropy_loss(t, N, C, a.buffer("logits", span_bytes(N, C, ld, t))->ptr(), ld,
                                          static_cast<int32_t*>(a.buffer("labels", f32(N))->ptr()),
                                          static_cast<float*>(a.buffer("loss", 4)->ptr()), dl ? dl->ptr() : nullptr, ldd,
                                          default_stream(env)), "crossEntropyLoss");
  return env.Undefined();
}

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  ok_or_throw(info.Env(), fc::stream_synchronize(default_stream(info.Env())), "synchronize");
  return info.Env().Undefined();
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("DeviceBuffer", DeviceBuffer::Init(env));
  auto fn = [&](const char* name, Napi::Function::Callback cb) { exports.Set(name, Napi::Function::New(env, cb, name)); };
  fn("setErrorClass", SetErrorClass);
  fn("deviceInfo", DeviceInfo);
  fn("memoryStats", MemoryStats);
  fn("emptyCache", EmptyCache);
  fn("rankPad", RankPad);
  fn("alloc", DeviceBuffer::Alloc);
  fn("upload", Upload);
  fn("download", Download);
  fn("downloadAsync", DownloadAsync);
  fn("fill", Fill);
  fn("cast", Cast);
  fn("gemm", Gemm);
  fn("refreshWExt", RefreshWExt);
  fn("loraForwardFused", LoraForwardFused);
  fn("loraBackwardFused", LoraBackwardFused);
  fn("loraForwardUnfused", LoraForwardUnfused);
  fn("loraBackwardUnfused", LoraBackwardUnfused);
  fn("adamw", AdamW);
  fn("mseLoss", MseLoss);
  fn("crossEntropyLoss", CrossEntropyLoss);
  fn("synchronize", Synchronize);
  fn("synchronizeAsync", SynchronizeAsync);
  return exports;
}

}  // namespace fused_lora::cuda_addon

static Napi::Object InitCudaAddon(Napi::Env env, Napi::Object exports) {
  return fused_lora::cuda_addon::Init(env, exports);
}
NODE_API_MODULE(fused_lora_cuda, InitCudaAddon)
