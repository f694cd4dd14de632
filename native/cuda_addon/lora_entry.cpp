// The GEMM and the LoRA layer on the device: the W_ext layout (native/cuda/tile_math.h), its refresh from the fp32 masters,
// and the fused and unfused forward and backward.
#include <napi.h>

#include "entries.h"
#include "handles.h"
#include "napi/call.h"
#include "tile_math.h"

namespace fused_lora::cuda_addon {
namespace {

using fc::DType;
namespace tiles = fused_lora::cuda::tiles;

// gemm({ dtype, math, bLayout: 'nt'|'nn', M, N, K, alpha, beta, A, lda, B, ldb, bias, C, ldc })
Napi::Value Gemm(const Napi::CallbackInfo& info) {
  return napi::call<DeviceFields>(info, "gemm", [](Napi::Env env, const DeviceFields& a) -> Napi::Value {
    fc::GemmArgs g;
    g.t = a.dtype("dtype");
    g.math = a.math();
    g.b_layout = a.choice("bLayout", {"nt", "nn"}, 0) == 1 ? fc::BLayout::NN : fc::BLayout::NT;
    const bool nn = g.b_layout == fc::BLayout::NN;
    g.M = a.dim("M", 1);
    g.N = a.dim("N", 1);
    g.K = a.dim("K", 1);
    g.lda = a.ld("lda", g.K, "K");
    g.ldb = nn ? a.ld("ldb", g.N, "N") : a.ld("ldb", g.K, "K");
    g.ldc = a.ld("ldc", g.N, "N");
    g.alpha = static_cast<float>(a.number_or("alpha", 1));
    g.beta = static_cast<float>(a.number_or("beta", 0));
    g.A = a.matrix("A", g.M, g.K, g.lda, g.t);
    g.B = nn ? a.matrix("B", g.K, g.N, g.ldb, g.t) : a.matrix("B", g.N, g.K, g.ldb, g.t);
    g.bias = a.matrix("bias", 1, g.N, g.N, g.t, true);
    g.C = a.matrix("C", g.M, g.N, g.ldc, g.t);
    check(fc::gemm(g, default_stream(env)), a.what);
    return env.Undefined();
  });
}

Napi::Value RankPad(const Napi::CallbackInfo& info) {
  return napi::call(info, "rankPad", [](Napi::Env env, const napi::Fields& f) -> Napi::Value {
    return Napi::Number::New(env, static_cast<double>(tiles::rank_pad(f.dim("r", 1))));
  });
}

// wExtLayout({ I, O, r }) -> { rPad, ldx, ldy, rows, elements }: the layout the kernels use, for the
// TS workspace to size W_ext, x_ext and dy_ext with. No device needed.
Napi::Value WExtLayout(const Napi::CallbackInfo& info) {
  return napi::call(info, "wExtLayout", [](Napi::Env env, const napi::Fields& f) -> Napi::Value {
    const int64_t I = f.dim("I", 1), O = f.dim("O", 1), r = f.dim("r", 1);
    const tiles::ExtLayout l = tiles::ext_layout(I, O, r);
    Napi::Object out = Napi::Object::New(env);
    out.Set("rPad", static_cast<double>(l.r_pad));
    out.Set("ldx", static_cast<double>(l.ldx));
    out.Set("ldy", static_cast<double>(l.ldy));
    out.Set("rows", static_cast<double>(l.rows));
    out.Set("elements", static_cast<double>(l.elements));
    return out;
  });
}

// The layer's dims, its extended layout and the compute dtype, shared by the LoRA ops.
struct Layer {
  DType t;
  fc::LoraDims d;
  tiles::ExtLayout ext;
};

Layer layer_of(const DeviceFields& a) {
  Layer l;
  l.t = a.dtype("dtype");
  l.d.M = a.dim("M", 1);
  l.d.I = a.dim("I", 1);
  l.d.O = a.dim("O", 1);
  l.d.r = a.dim("r", 1);
  l.d.scaling = static_cast<float>(a.number_or("scaling", 1));
  l.ext = tiles::ext_layout(l.d.I, l.d.O, l.d.r);
  return l;
}

// refreshWExt({ dtype, I, O, r, scaling, wExt, A, B })
Napi::Value RefreshWExt(const Napi::CallbackInfo& info) {
  return napi::call<DeviceFields>(info, "refreshWExt", [](Napi::Env env, const DeviceFields& a) -> Napi::Value {
    const DType t = a.dtype("dtype");
    const int64_t I = a.dim("I", 1), O = a.dim("O", 1), r = a.dim("r", 1);
    const tiles::ExtLayout l = tiles::ext_layout(I, O, r);
    void* w = a.matrix("wExt", l.rows, l.ldx, l.ldx, t);
    const float* A = a.f32("A", I * r);
    const float* B = a.f32("B", r * O);
    check(fc::refresh_w_ext(t, I, O, r, w, l.ldx, A, B, static_cast<float>(a.number_or("scaling", 1)), default_stream(env)), a.what);
    return env.Undefined();
  });
}

// loraForwardFused({ dtype, math, M, I, O, r, scaling, xExt, wExt, bias?, A, y, ldy? })
Napi::Value LoraForwardFused(const Napi::CallbackInfo& info) {
  return napi::call<DeviceFields>(info, "loraForwardFused", [](Napi::Env env, const DeviceFields& a) -> Napi::Value {
    const Layer l = layer_of(a);
    const auto& d = l.d;
    const int64_t ldy = a.ld("ldy", d.O, "O");
    void* x = a.matrix("xExt", d.M, l.ext.ldx, l.ext.ldx, l.t);
    const void* w = a.matrix("wExt", l.ext.rows, l.ext.ldx, l.ext.ldx, l.t);
    const void* bias = a.matrix("bias", 1, d.O, d.O, l.t, true);
    const float* A = a.f32("A", d.I * d.r);
    void* y = a.matrix("y", d.M, d.O, ldy, l.t);
    check(fc::lora_forward_fused(l.t, d, x, w, bias, A, y, ldy, a.math(), default_stream(env)), a.what);
    return env.Undefined();
  });
}

// loraBackwardFused({ dtype, math, M, I, O, r, scaling, xExt, dyExt, wExt, B, dsWork, dA, dB, dx?, lddx?, accumulate })
Napi::Value LoraBackwardFused(const Napi::CallbackInfo& info) {
  return napi::call<DeviceFields>(info, "loraBackwardFused", [](Napi::Env env, const DeviceFields& a) -> Napi::Value {
    const Layer l = layer_of(a);
    const auto& d = l.d;
    const int64_t lddx = a.ld("lddx", d.I, "I");
    const void* x = a.matrix("xExt", d.M, l.ext.ldx, l.ext.ldx, l.t);
    void* dy = a.matrix("dyExt", d.M, l.ext.ldy, l.ext.ldy, l.t);
    const void* w = a.matrix("wExt", l.ext.rows, l.ext.ldx, l.ext.ldx, l.t);
    const float* B = a.f32("B", d.r * d.O);
    float* ds = a.f32("dsWork", d.M * d.r);
    float* dA = a.f32("dA", d.I * d.r);
    float* dB = a.f32("dB", d.r * d.O);
    void* dx = a.matrix("dx", d.M, d.I, lddx, l.t, true);
    check(fc::lora_backward_fused(l.t, d, x, dy, w, B, ds, dA, dB, dx, lddx, a.boolean("accumulate", false), a.math(),
                                  default_stream(env)),
          a.what);
    return env.Undefined();
  });
}

// loraForwardUnfused({ dtype, math, M, I, O, r, scaling, x, W, bias?, A, B, s, u, y }) — A, B in the compute dtype.
Napi::Value LoraForwardUnfused(const Napi::CallbackInfo& info) {
  return napi::call<DeviceFields>(info, "loraForwardUnfused", [](Napi::Env env, const DeviceFields& a) -> Napi::Value {
    const Layer l = layer_of(a);
    const auto& d = l.d;
    auto dense = [&](const char* key, int64_t rows, int64_t cols) { return a.matrix(key, rows, cols, cols, l.t); };
    const void* x = dense("x", d.M, d.I);
    const void* W = dense("W", d.O, d.I);
    const void* bias = a.matrix("bias", 1, d.O, d.O, l.t, true);
    const void* A = dense("A", d.I, d.r);
    const void* B = dense("B", d.r, d.O);
    void* s = dense("s", d.M, d.r);
    void* u = dense("u", d.M, d.O);
    void* y = dense("y", d.M, d.O);
    check(fc::lora_forward_unfused(l.t, d, x, W, bias, A, B, s, u, y, a.math(), default_stream(env)), a.what);
    return env.Undefined();
  });
}

// loraBackwardUnfused({ dtype, math, M, I, O, r, scaling, x, s, dy, W, A, B, du, ds, dA, dB, dx?, accumulate })
Napi::Value LoraBackwardUnfused(const Napi::CallbackInfo& info) {
  return napi::call<DeviceFields>(info, "loraBackwardUnfused", [](Napi::Env env, const DeviceFields& a) -> Napi::Value {
    const Layer l = layer_of(a);
    const auto& d = l.d;
    auto dense = [&](const char* key, int64_t rows, int64_t cols) { return a.matrix(key, rows, cols, cols, l.t); };
    const void* x = dense("x", d.M, d.I);
    const void* s = dense("s", d.M, d.r);
    const void* dy = dense("dy", d.M, d.O);
    const void* W = dense("W", d.O, d.I);
    const void* A = dense("A", d.I, d.r);
    const void* B = dense("B", d.r, d.O);
    void* du = dense("du", d.M, d.O);
    void* ds = dense("ds", d.M, d.r);
    float* dA = a.f32("dA", d.I * d.r);
    float* dB = a.f32("dB", d.r * d.O);
    void* dx = a.matrix("dx", d.M, d.I, d.I, l.t, true);
    check(fc::lora_backward_unfused(l.t, d, x, s, dy, W, A, B, du, ds, dA, dB, dx, a.boolean("accumulate", false), a.math(),
                                    default_stream(env)),
          a.what);
    return env.Undefined();
  });
}

}  // namespace

void RegisterLora(Napi::Env env, Napi::Object exports) {
  napi::add_function(env, exports, "gemm", Gemm);
  napi::add_function(env, exports, "rankPad", RankPad);
  napi::add_function(env, exports, "wExtLayout", WExtLayout);
  napi::add_function(env, exports, "refreshWExt", RefreshWExt);
  napi::add_function(env, exports, "loraForwardFused", LoraForwardFused);
  napi::add_function(env, exports, "loraBackwardFused", LoraBackwardFused);
  napi::add_function(env, exports, "loraForwardUnfused", LoraForwardUnfused);
  napi::add_function(env, exports, "loraBackwardUnfused", LoraBackwardUnfused);
}

}  // namespace fused_lora::cuda_addon
