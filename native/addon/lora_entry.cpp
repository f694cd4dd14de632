// The layer exports: the frozen linear layer and the LoRA layer, forward and backward, sync and
// async, and merge. One parser per op reads and checks its options (napi/fields.h) into a Job over
// the kernels of native/cpu (fused_lora/lora.h); workers.cpp runs it.
#include <napi.h>

#include "entries.h"
#include "fused_lora/lora.h"
#include "napi/call.h"
#include "workers.h"

namespace fused_lora::addon {
namespace {

using napi::Fields;
using napi::product;

// Dimensions shared by forward and backward, with the element counts every buffer needs.
struct Dims {
  int64_t M, I, O, r, MI, MO, Mr, Ir, rO, OI;
};

Dims read_dims(const Fields& f) {
  Dims d{};
  d.M = f.dim("M");
  d.I = f.dim("I");
  d.O = f.dim("O");
  d.r = f.dim("r", 1);
  d.MI = product(d.M, d.I, f.what);
  d.MO = product(d.M, d.O, f.what);
  d.Mr = product(d.M, d.r, f.what);
  d.Ir = product(d.I, d.r, f.what);
  d.rO = product(d.r, d.O, f.what);
  d.OI = product(d.O, d.I, f.what);
  return d;
}

Dropout read_dropout(const Fields& f, const Dims& d, bool forward) {
  Dropout dr;
  dr.p = static_cast<float>(f.number_or("dropoutP", 0));
  if (!(dr.p >= 0.0f && dr.p < 1.0f))  // checked as the kernel sees it, in fp32
    napi::fail("ERR_ARGUMENT", f.what, "dropoutP", "a number in [0, 1)", napi::describe(f.get("dropoutP")));
  if (dr.p > 0.0f) {
    if (forward) {
      dr.seed = f.seed("seed");
      dr.step = f.seed("step");
    }
    dr.mask = f.bytes("mask", d.MI);
    dr.x_drop = f.floats("xDrop", d.MI);
  }
  return dr;
}

// What forward and backward both read: the dims, x, the layer's W, A and B, and the scaling.
template <class Args>
void read_layer(const Fields& f, const Dims& d, Args& a) {
  a.M = d.M, a.I = d.I, a.O = d.O, a.r = d.r;
  a.x = f.floats("x", d.MI);
  a.W = f.floats("W", d.OI);
  a.fan_in_fan_out = f.boolean("fanInFanOut", false);  // W stored (I, O), as tf.layers.dense keeps it
  a.A = f.floats("A", d.Ir);
  a.B = f.floats("B", d.rO);
  a.scaling = static_cast<float>(f.number("scaling"));
}

Job parse_forward(const Fields& f) {
  const Dims d = read_dims(f);
  ForwardArgs a;
  read_layer(f, d, a);
  a.bias = f.floats("bias", d.O, true);
  a.dropout = read_dropout(f, d, true);
  a.s = f.floats("s", d.Mr);
  a.y = f.floats("y", d.MO);
  const bool fused = f.boolean("fused", true);
  const double macs = double(d.M) * double(d.I * d.O + d.r * (d.I + d.O));
  return Job{[a, fused] { fused ? lora_forward_fused(a) : lora_forward_unfused(a); }, macs};
}

Job parse_backward(const Fields& f) {
  const Dims d = read_dims(f);
  BackwardArgs a;
  read_layer(f, d, a);
  a.s = f.floats("s", d.Mr);
  a.dy = f.floats("dy", d.MO);
  a.dropout = read_dropout(f, d, false);
  a.ds = f.floats("ds", d.Mr);
  a.dx = f.floats("dx", d.MI, true);
  if (a.dropout.p > 0.0f && a.dx != nullptr) a.lora_dx = f.floats("loraDx", d.MI);
  a.dA = f.floats("dA", d.Ir);
  a.dB = f.floats("dB", d.rO);
  a.accumulate = f.boolean("accumulate", false);  // as the CUDA addon: an output is overwritten unless asked
  const bool fused = f.boolean("fused", true);
  const double macs = double(d.M) * double(d.I * d.O + 2 * d.r * (d.I + d.O));
  return Job{[a, fused] { fused ? lora_backward_fused(a) : lora_backward_unfused(a); }, macs};
}

Job parse_linear_forward(const Fields& f) {
  const int64_t M = f.dim("M"), I = f.dim("I"), O = f.dim("O");
  const float* x = f.floats("x", product(M, I, f.what));
  const float* W = f.floats("W", product(O, I, f.what));
  const float* bias = f.floats("bias", O, true);
  float* y = f.floats("y", product(M, O, f.what));
  return Job{[=] { linear_forward(x, W, bias, y, M, I, O); }, double(M) * double(I) * double(O)};
}

Job parse_linear_backward(const Fields& f) {
  const int64_t M = f.dim("M"), I = f.dim("I"), O = f.dim("O");
  const float* dy = f.floats("dy", product(M, O, f.what));
  const float* W = f.floats("W", product(O, I, f.what));
  float* dx = f.floats("dx", product(M, I, f.what));
  return Job{[=] { linear_backward(dy, W, dx, M, I, O); }, double(M) * double(I) * double(O)};
}

Napi::Value LoraForward(const Napi::CallbackInfo& info) { return run_sync(info, "loraForward", parse_forward); }
Napi::Value LoraBackward(const Napi::CallbackInfo& info) { return run_sync(info, "loraBackward", parse_backward); }
Napi::Value LoraForwardAsync(const Napi::CallbackInfo& info) { return run_async(info, "loraForwardAsync", parse_forward); }
Napi::Value LoraBackwardAsync(const Napi::CallbackInfo& info) { return run_async(info, "loraBackwardAsync", parse_backward); }
Napi::Value LinearForward(const Napi::CallbackInfo& info) { return run_sync(info, "linearForward", parse_linear_forward); }
Napi::Value LinearBackward(const Napi::CallbackInfo& info) { return run_sync(info, "linearBackward", parse_linear_backward); }
Napi::Value LinearForwardAsync(const Napi::CallbackInfo& info) {
  return run_async(info, "linearForwardAsync", parse_linear_forward);
}
Napi::Value LinearBackwardAsync(const Napi::CallbackInfo& info) {
  return run_async(info, "linearBackwardAsync", parse_linear_backward);
}

// merge({ W, A, B, I, O, r, scaling, sign }) -> boolean: false (W untouched) when a result would be
// non-finite.
Napi::Value Merge(const Napi::CallbackInfo& info) {
  return napi::call(info, "merge", [](Napi::Env env, const Fields& f) -> Napi::Value {
    const int64_t I = f.dim("I"), O = f.dim("O"), r = f.dim("r");
    float* W = f.floats("W", product(O, I, f.what));
    const float* A = f.floats("A", product(I, r, f.what));
    const float* B = f.floats("B", product(r, O, f.what));
    const float scaling = static_cast<float>(f.number("scaling")), sign = static_cast<float>(f.number("sign"));
    if (sign != 1.0f && sign != -1.0f) napi::fail("ERR_ARGUMENT", f.what, "sign", "1 or -1", napi::describe(f.get("sign")));
    return Napi::Boolean::New(env, lora_merge(W, A, B, I, O, r, scaling, sign));
  });
}

}  // namespace

void RegisterLora(Napi::Env env, Napi::Object exports) {
  napi::add_functions(env, exports, {{"linearForward", LinearForward}, {"linearBackward", LinearBackward},
                                      {"linearForwardAsync", LinearForwardAsync},
                                      {"linearBackwardAsync", LinearBackwardAsync}, {"loraForward", LoraForward},
                                      {"loraBackward", LoraBackward}, {"loraForwardAsync", LoraForwardAsync},
                                      {"loraBackwardAsync", LoraBackwardAsync}, {"merge", Merge}});
}

}  // namespace fused_lora::addon
