// The multi-adapter layer's exports: grouping rows by adapter, and the forward and backward over the
// segments, sync and async (fused_lora/multi_lora.h). Per-adapter values come as an array of objects,
// each read with the same checks as a top-level field. The frozen weight and the activations come in
// any format the single-adapter layer takes (operands.h).
#include <napi.h>

#include <string>
#include <vector>

#include "entries.h"
#include "fused_lora/multi_lora.h"
#include "napi/call.h"
#include "operands.h"
#include "workers.h"

namespace fused_lora::addon {
namespace {

using napi::Fields;
using napi::product;

// order and start, checked so that no segment reaches past the rows (a bad permutation gives wrong
// numbers, never a wild read), and whether the rows are grouped, recomputed here rather than trusted.
Segments read_segments(const Fields& f, int64_t M, int64_t K) {
  Segments sg;
  sg.M = M;
  sg.K = K;
  int32_t* order = f.ints("order", M);
  int32_t* start = f.ints("start", K + 1);
  for (int64_t m = 0; m < M; ++m)
    if (order[m] < 0 || order[m] >= M)
      napi::fail("ERR_ARGUMENT", f.what, "order[" + std::to_string(m) + "]", "a row in [0, " + std::to_string(M) + ")",
                 std::to_string(order[m]));
  if (start[0] != 0) napi::fail("ERR_ARGUMENT", f.what, "start[0]", "0", std::to_string(start[0]));
  for (int64_t i = 0; i < K; ++i)
    if (start[i + 1] < start[i] || start[i + 1] > M)
      napi::fail("ERR_ARGUMENT", f.what, "start[" + std::to_string(i + 1) + "]",
                 "a position in [" + std::to_string(start[i]) + ", " + std::to_string(M) + "]", std::to_string(start[i + 1]));
  sg.grouped = true;
  for (int64_t i = 0; i < K && sg.grouped; ++i)
    for (int64_t g = start[i] + 1; g < start[i + 1]; ++g)
      if (order[g] != order[g - 1] + 1) {
        sg.grouped = false;
        break;
      }
  sg.order = order;
  sg.start = start;
  return sg;
}

// adapters[i]: { r, A (I, r), B (r, O), scaling, dropoutP?, seed?, step?, dA?, dB? }.
std::vector<MultiAdapter> read_adapters(const Fields& f, int64_t K, int64_t I, int64_t O, bool forward) {
  Napi::Value list = f.get("adapters");
  if (!list.IsArray() || list.As<Napi::Array>().Length() != uint64_t(K))
    napi::fail("ERR_ARGUMENT", f.what, "adapters", "an array of " + std::to_string(K) + " adapter objects", napi::describe(list));
  Napi::Array arr = list.As<Napi::Array>();
  std::vector<MultiAdapter> out(static_cast<size_t>(K));
  for (uint32_t i = 0; i < uint32_t(K); ++i) {
    Napi::Value v = arr.Get(i);
    const std::string name = "adapters[" + std::to_string(i) + "]";
    if (!v.IsObject() || v.IsArray()) napi::fail("ERR_ARGUMENT", f.what, name, "an adapter object", napi::describe(v));
    const Fields af{v.As<Napi::Object>(), f.what + ": " + name, f.keep};
    MultiAdapter& a = out[i];
    a.r = af.dim("r", 1);
    a.A = af.floats("A", product(I, a.r, f.what));
    a.B = af.floats("B", product(a.r, O, f.what));
    a.scaling = static_cast<float>(af.number("scaling"));
    a.dropout.p = static_cast<float>(af.number_or("dropoutP", 0));
    if (!(a.dropout.p >= 0.0f && a.dropout.p < 1.0f))  // as the kernel sees it, in fp32
      napi::fail("ERR_ARGUMENT", af.what, "dropoutP", "a number in [0, 1)", napi::describe(af.get("dropoutP")));
    if (forward && a.dropout.p > 0.0f) {
      a.dropout.seed = af.seed("seed");
      a.dropout.step = af.seed("step");
    }
    if (!forward) {
      a.dA = af.floats("dA", product(I, a.r, f.what));
      a.dB = af.floats("dB", product(a.r, O, f.what));
    }
  }
  return out;
}

bool any_dropout(const Segments& sg, const std::vector<MultiAdapter>& ad) {
  for (int64_t i = 0; i < sg.K; ++i)
    if (sg.start[i + 1] > sg.start[i] && ad[size_t(i)].dropout.p > 0.0f) return true;
  return false;
}

struct Dims {
  int64_t M, I, O, K;
};

Dims read_dims(const Fields& f) {
  Dims d{f.dim("M"), f.dim("I", 1), f.dim("O", 1), f.dim("K")};
  product(d.M, d.I, f.what);
  product(d.M, d.O, f.what);
  product(d.O, d.I, f.what);
  return d;
}

double macs(const Dims& d, const Segments& sg, const std::vector<MultiAdapter>& ad) {
  return double(d.M) * double(d.I) * double(d.O) + double(multi_lora_s_size(sg, ad.data())) * double(d.I + d.O);
}

Job parse_forward(const Fields& f) {
  const Dims d = read_dims(f);
  MultiForwardArgs a;
  a.M = d.M, a.I = d.I, a.O = d.O;
  Bf16Io io;
  const bool bf16 = bf16_acts(f);
  a.x = activation<const float>(f, bf16, "x", product(d.M, d.I, f.what), &io.x, nullptr);
  a.Wq = read_frozen(f, d.O, d.I);
  a.W = a.Wq.f32;
  a.bias = f.floats("bias", d.O, true);
  a.seg = read_segments(f, d.M, d.K);
  std::vector<MultiAdapter> adapters = read_adapters(f, d.K, d.I, d.O, true);
  const int64_t lora_rows = a.seg.start[d.K];
  a.s = f.floats("s", multi_lora_s_size(a.seg, adapters.data()));
  if (multi_lora_needs_xt(a.seg, adapters.data())) a.xt = f.floats("xt", product(lora_rows, d.I, f.what));
  if (any_dropout(a.seg, adapters)) a.mask = f.bytes("mask", product(lora_rows, d.I, f.what));
  a.y = activation<float>(f, bf16, "y", product(d.M, d.O, f.what), nullptr, &io.y);
  const double n = macs(d, a.seg, adapters);
  return Job{[a, adapters, io]() mutable {
               a.adapters = adapters.data();
               multi_lora_forward(a, io);
             },
             n};
}

Job parse_backward(const Fields& f) {
  const Dims d = read_dims(f);
  MultiBackwardArgs a;
  a.M = d.M, a.I = d.I, a.O = d.O;
  Bf16Io io;
  const bool bf16 = bf16_acts(f);
  a.x = activation<const float>(f, bf16, "x", product(d.M, d.I, f.what), &io.x, nullptr);
  a.dy = activation<const float>(f, bf16, "dy", product(d.M, d.O, f.what), &io.dy, nullptr);
  a.Wq = read_frozen(f, d.O, d.I);
  a.W = a.Wq.f32;
  a.seg = read_segments(f, d.M, d.K);
  std::vector<MultiAdapter> adapters = read_adapters(f, d.K, d.I, d.O, false);
  const int64_t lora_rows = a.seg.start[d.K], ns = multi_lora_s_size(a.seg, adapters.data());
  a.s = f.floats("s", ns);
  a.ds = f.floats("ds", ns);
  if (multi_lora_needs_xt(a.seg, adapters.data())) a.xt = f.floats("xt", product(lora_rows, d.I, f.what));
  if (any_dropout(a.seg, adapters)) a.mask = f.bytes("mask", product(lora_rows, d.I, f.what));
  if (!a.seg.grouped) a.dyg = f.floats("dyg", product(lora_rows, d.O, f.what));
  a.dx = activation<float>(f, bf16, "dx", product(d.M, d.I, f.what), nullptr, &io.dx, true);
  const double n = 2 * macs(d, a.seg, adapters);
  return Job{[a, adapters, io]() mutable {
               a.adapters = adapters.data();
               multi_lora_backward(a, io);
             },
             n};
}

// multiLoraGroup({ M, K, index: Int32Array (M), order: Int32Array (M), start: Int32Array (K + 1) })
// -> whether the rows are grouped (every adapter's rows one contiguous run).
Napi::Value MultiLoraGroup(const Napi::CallbackInfo& info) {
  return napi::call(info, "multiLoraGroup", [](Napi::Env env, const Fields& f) -> Napi::Value {
    const int64_t M = f.dim("M"), K = f.dim("K");
    const int32_t* index = f.ints("index", M);
    int32_t* order = f.ints("order", M);
    int32_t* start = f.ints("start", K + 1);
    for (int64_t m = 0; m < M; ++m)
      if (index[m] < -1 || index[m] >= K)
        napi::fail("ERR_ARGUMENT", f.what, "index[" + std::to_string(m) + "]", "an adapter in [-1, " + std::to_string(K) + ")",
                   std::to_string(index[m]));
    return Napi::Boolean::New(env, multi_lora_group(index, M, K, order, start));
  });
}

Napi::Value MultiLoraForward(const Napi::CallbackInfo& info) { return run_sync(info, "multiLoraForward", parse_forward); }
Napi::Value MultiLoraBackward(const Napi::CallbackInfo& info) { return run_sync(info, "multiLoraBackward", parse_backward); }
Napi::Value MultiLoraForwardAsync(const Napi::CallbackInfo& info) {
  return run_async(info, "multiLoraForwardAsync", parse_forward);
}
Napi::Value MultiLoraBackwardAsync(const Napi::CallbackInfo& info) {
  return run_async(info, "multiLoraBackwardAsync", parse_backward);
}

}  // namespace

void RegisterMultiLora(Napi::Env env, Napi::Object exports) {
  napi::add_functions(env, exports, {{"multiLoraGroup", MultiLoraGroup}, {"multiLoraForward", MultiLoraForward},
                                      {"multiLoraBackward", MultiLoraBackward},
                                      {"multiLoraForwardAsync", MultiLoraForwardAsync},
                                      {"multiLoraBackwardAsync", MultiLoraBackwardAsync}});
}

}  // namespace fused_lora::addon
