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
  // The buffers of x_ext (M, ldx) and W_ext (rows, ldx), in the compute dtype.
  void* x_ext(const DeviceFields& a) const { return a.matrix("xExt", d.M, ext.ldx, ext.ldx, t); }
  void* w_ext(const DeviceFields& a) const { return a.matrix("wExt", ext.rows, ext.ldx, ext.ldx, t); }
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
    void* x = l.x_ext(a);
    const void* w = l.w_ext(a);
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
    const void* x = l.x_ext(a);
    void* dy = a.matrix("dyExt", d.M, l.ext.ldy, l.ext.ldy, l.t);
    const void* w = l.w_ext(a);
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

// The operands both unfused ops read, each a dense matrix in the compute dtype: x (M, I), W (O, I),
// A (I, r), B (r, O) and s (M, r); `dense` reads any other.
struct Unfused {
  const DeviceFields& a;
  const Layer& l;
  void* dense(const char* key, int64_t rows, int64_t cols) const { return a.matrix(key, rows, cols, cols, l.t); }
  void *x = dense("x", l.d.M, l.d.I), *W = dense("W", l.d.O, l.d.I), *A = dense("A", l.d.I, l.d.r),
       *B = dense("B", l.d.r, l.d.O), *s = dense("s", l.d.M, l.d.r);
};

// loraForwardUnfused({ dtype, math, M, I, O, r, scaling, x, W, bias?, A, B, s, u, y }) — A, B in the compute dtype.
Napi::Value LoraForwardUnfused(const Napi::CallbackInfo& info) {
  return napi::call<DeviceFields>(info, "loraForwardUnfused", [](Napi::Env env, const DeviceFields& a) -> Napi::Value {
    const Layer l = layer_of(a);
    const auto& d = l.d;
    const Unfused u{a, l};
    const void* bias = a.matrix("bias", 1, d.O, d.O, l.t, true);
    void* tmp = u.dense("u", d.M, d.O);
    void* y = u.dense("y", d.M, d.O);
    check(fc::lora_forward_unfused(l.t, d, u.x, u.W, bias, u.A, u.B, u.s, tmp, y, a.math(), default_stream(env)), a.what);
    return env.Undefined();
  });
}

// loraBackwardUnfused({ dtype, math, M, I, O, r, scaling, x, s, dy, W, A, B, du, ds, dA, dB, dx?, accumulate })
Napi::Value LoraBackwardUnfused(const Napi::CallbackInfo& info) {
  return napi::call<DeviceFields>(info, "loraBackwardUnfused", [](Napi::Env env, const DeviceFields& a) -> Napi::Value {
    const Layer l = layer_of(a);
    const auto& d = l.d;
    const Unfused u{a, l};
    const void* dy = u.dense("dy", d.M, d.O);
    void* du = u.dense("du", d.M, d.O);
    void* ds = u.dense("ds", d.M, d.r);
    float* dA = a.f32("dA", d.I * d.r);
    float* dB = a.f32("dB", d.r * d.O);
    void* dx = a.matrix("dx", d.M, d.I, d.I, l.t, true);
    check(fc::lora_backward_unfused(l.t, d, u.x, u.s, dy, u.W, u.A, u.B, du, ds, dA, dB, dx, a.boolean("accumulate", false),
                                    a.math(), default_stream(env)),
          a.what);
    return env.Undefined();
  });
}

}  // namespace

void RegisterLora(Napi::Env env, Napi::Object exports) {
  napi::add_functions(env, exports, {{"gemm", Gemm}, {"rankPad", RankPad}, {"wExtLayout", WExtLayout},
                                      {"refreshWExt", RefreshWExt}, {"loraForwardFused", LoraForwardFused},
                                      {"loraBackwardFused", LoraBackwardFused},
                                      {"loraForwardUnfused", LoraForwardUnfused},
                                      {"loraBackwardUnfused", LoraBackwardUnfused}});
}

}  // namespace fused_lora::cuda_addon
