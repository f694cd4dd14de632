// Many adapters on one base on the device (native/cuda/multi_lora.cu): the concatenated masters and
// W_ext built from each adapter's A and B, and the fused forward and backward, whose backward also
// adds each adapter's block of dA_cat and dB_cat into its own gradients. Per-adapter values come as
// an array of objects, each read with the same checks as a top-level field.
#include <napi.h>

#include <string>
#include <vector>

#include "entries.h"
#include "handles.h"
#include "napi/call.h"
#include "tile_math.h"

namespace fused_lora::cuda_addon {
namespace {

using fc::DType;
namespace tiles = fused_lora::cuda::tiles;

struct Adapter {
  int64_t r = 0, off = 0;
  float scaling = 1.f;
  const float* A = nullptr;  // (I, r), refresh only
  const float* B = nullptr;  // (r, O), refresh only
  float* dA = nullptr;       // (I, r), backward only
  float* dB = nullptr;       // (r, O), backward only
};

// adapters[i]: { r, scaling, and A, B (refresh) or dA, dB (backward) }; their padded ranks must add up to R.
std::vector<Adapter> read_adapters(const DeviceFields& a, int64_t I, int64_t O, int64_t R, bool grads) {
  Napi::Value list = a.get("adapters");
  if (!list.IsArray() || list.As<Napi::Array>().Length() == 0)
    napi::fail("ERR_ARGUMENT", a.what, "adapters", "a non-empty array of adapter objects", napi::describe(list));
  Napi::Array arr = list.As<Napi::Array>();
  std::vector<Adapter> out(arr.Length());
  int64_t off = 0;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value v = arr.Get(i);
    const std::string name = "adapters[" + std::to_string(i) + "]";
    if (!v.IsObject() || v.IsArray()) napi::fail("ERR_ARGUMENT", a.what, name, "an adapter object", napi::describe(v));
    const DeviceFields f{{v.As<Napi::Object>(), a.what + ": " + name, a.keep}};
    Adapter& ad = out[i];
    ad.r = f.dim("r", 1);
    ad.off = off;
    off += tiles::rank_pad(ad.r);
    ad.scaling = static_cast<float>(f.number("scaling"));
    if (grads) {
      ad.dA = f.f32("dA", napi::product(I, ad.r, a.what));
      ad.dB = f.f32("dB", napi::product(ad.r, O, a.what));
    } else {
      ad.A = f.f32("A", napi::product(I, ad.r, a.what));
      ad.B = f.f32("B", napi::product(ad.r, O, a.what));
    }
  }
  if (off != R)
    napi::fail("ERR_SHAPE", a.what, "R", "the sum of the adapters' padded ranks (" + std::to_string(off) + ")", std::to_string(R));
  return out;
}

struct Dims {
  DType t;
  fc::LoraDims d;  // r = R
  tiles::ExtLayout ext;
};

Dims dims_of(const DeviceFields& a, bool rows) {
  Dims l;
  l.t = a.dtype("dtype");
  l.d.M = rows ? a.dim("M", 1) : 1;
  l.d.I = a.dim("I", 1);
  l.d.O = a.dim("O", 1);
  l.d.r = a.dim("R", 1);
  if (tiles::rank_pad(l.d.r) != l.d.r)
    napi::fail("ERR_SHAPE", a.what, "R", "a multiple of the rank step (" + std::to_string(tiles::rank_pad(1)) + ")", std::to_string(l.d.r));
  l.ext = tiles::ext_layout(l.d.I, l.d.O, l.d.r);
  return l;
}

// index: a device int32 buffer of M row adapters then R column adapters.
const int32_t* index_of(const DeviceFields& a, const Dims& l) {
  return static_cast<const int32_t*>(a.buffer("index", static_cast<size_t>(l.d.M + l.d.r) * sizeof(int32_t))->ptr());
}

// multiLoraRefresh({ dtype, I, O, R, adapters: [{ r, scaling, A, B }], aCat, bCat, wExt }): A_cat (I, R)
// and B_cat (R, O, scaling_i·B_i) from the fp32 masters, zero in the padding, then W_ext's Aᵀ and Bᵀ blocks.
Napi::Value MultiLoraRefresh(const Napi::CallbackInfo& info) {
  return napi::call<DeviceFields>(info, "multiLoraRefresh", [](Napi::Env env, const DeviceFields& a) -> Napi::Value {
    const Dims l = dims_of(a, false);
    const int64_t I = l.d.I, O = l.d.O, R = l.d.r;
    const std::vector<Adapter> ads = read_adapters(a, I, O, R, false);
    float* aCat = a.f32("aCat", napi::product(I, R, a.what));
    float* bCat = a.f32("bCat", napi::product(R, O, a.what));
    void* w = a.matrix("wExt", l.ext.rows, l.ext.ldx, l.ext.ldx, l.t);
    const fc::Stream s = default_stream(env);
    check(fc::fill(aCat, DType::F32, R, I, R, 0.f, s), a.what);
    check(fc::fill(bCat, DType::F32, O, R, O, 0.f, s), a.what);
    for (const Adapter& ad : ads) {
      check(fc::cast(aCat + ad.off, DType::F32, R, ad.A, DType::F32, ad.r, I, ad.r, s), a.what);
      check(fc::axpby(DType::F32, ad.r, O, ad.scaling, ad.B, O, 0.f, bCat + ad.off * O, O, s), a.what);
    }
    check(fc::refresh_w_ext(l.t, I, O, R, w, l.ext.ldx, aCat, bCat, 1.f, s), a.what);
    return env.Undefined();
  });
}

// multiLoraForwardFused({ dtype, math, M, I, O, R, xExt, wExt, bias?, aCat, index, y, ldy? })
Napi::Value MultiLoraForwardFused(const Napi::CallbackInfo& info) {
  return napi::call<DeviceFields>(info, "multiLoraForwardFused", [](Napi::Env env, const DeviceFields& a) -> Napi::Value {
    const Dims l = dims_of(a, true);
    const auto& d = l.d;
    const int64_t ldy = a.ld("ldy", d.O, "O");
    void* x = a.matrix("xExt", d.M, l.ext.ldx, l.ext.ldx, l.t);
    const void* w = a.matrix("wExt", l.ext.rows, l.ext.ldx, l.ext.ldx, l.t);
    const void* bias = a.matrix("bias", 1, d.O, d.O, l.t, true);
    const float* aCat = a.f32("aCat", napi::product(d.I, d.r, a.what));
    const int32_t* index = index_of(a, l);
    void* y = a.matrix("y", d.M, d.O, ldy, l.t);
    check(fc::multi_lora_forward_fused(l.t, d, x, w, bias, aCat, index, index + d.M, y, ldy, a.math(), default_stream(env)),
          a.what);
    return env.Undefined();
  });
}

// multiLoraBackwardFused({ dtype, math, M, I, O, R, xExt, dyExt, wExt, bCat, index, dsWork, dACat, dBCat,
//   adapters: [{ r, scaling, dA, dB }], dx?, lddx? }): dA_i += block i of dA_cat, dB_i += scaling_i·block i of dB_cat.
Napi::Value MultiLoraBackwardFused(const Napi::CallbackInfo& info) {
  return napi::call<DeviceFields>(info, "multiLoraBackwardFused", [](Napi::Env env, const DeviceFields& a) -> Napi::Value {
    const Dims l = dims_of(a, true);
    const auto& d = l.d;
    const int64_t lddx = a.ld("lddx", d.I, "I");
    const std::vector<Adapter> ads = read_adapters(a, d.I, d.O, d.r, true);
    const void* x = a.matrix("xExt", d.M, l.ext.ldx, l.ext.ldx, l.t);
    void* dy = a.matrix("dyExt", d.M, l.ext.ldy, l.ext.ldy, l.t);
    const void* w = a.matrix("wExt", l.ext.rows, l.ext.ldx, l.ext.ldx, l.t);
    const float* bCat = a.f32("bCat", napi::product(d.r, d.O, a.what));
    const int32_t* index = index_of(a, l);
    float* ds = a.f32("dsWork", napi::product(d.M, d.r, a.what));
    float* dACat = a.f32("dACat", napi::product(d.I, d.r, a.what));
    float* dBCat = a.f32("dBCat", napi::product(d.r, d.O, a.what));
    void* dx = a.matrix("dx", d.M, d.I, lddx, l.t, true);
    const fc::Stream s = default_stream(env);
    check(fc::multi_lora_backward_fused(l.t, d, x, dy, w, bCat, index, index + d.M, ds, dACat, dBCat, dx, lddx, a.math(), s),
          a.what);
    for (const Adapter& ad : ads) {
      check(fc::axpby(DType::F32, d.I, ad.r, 1.f, dACat + ad.off, d.r, 1.f, ad.dA, ad.r, s), a.what);
      check(fc::axpby(DType::F32, ad.r, d.O, ad.scaling, dBCat + ad.off * d.O, d.O, 1.f, ad.dB, d.O, s), a.what);
    }
    return env.Undefined();
  });
}

}  // namespace

void RegisterMultiLora(Napi::Env env, Napi::Object exports) {
  napi::add_functions(env, exports, {{"multiLoraRefresh", MultiLoraRefresh}, {"multiLoraForwardFused", MultiLoraForwardFused},
                                      {"multiLoraBackwardFused", MultiLoraBackwardFused}});
}

}  // namespace fused_lora::cuda_addon
