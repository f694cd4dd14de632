// The layer exports: the frozen linear layer and the LoRA layer, forward and backward, sync and
// async, and merge. One parser per op reads and checks its options (napi/fields.h) into a Job over
// the kernels of native/cpu (fused_lora/lora.h); workers.cpp runs it.
#include <napi.h>

#include "entries.h"
#include "fused_lora/lora.h"
#include "napi/call.h"
#include "operands.h"
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
void read_layer(const Fields& f, const Dims& d, Args& a, bool bf16, Bf16Io& io) {
  a.M = d.M, a.I = d.I, a.O = d.O, a.r = d.r;
  a.x = activation<const float>(f, bf16, "x", d.MI, &io.x, nullptr);
  a.Wq = read_frozen(f, d.O, d.I);
  a.W = a.Wq.f32;
  a.fan_in_fan_out = f.boolean("fanInFanOut", false);  // W stored (I, O), as tf.layers.dense keeps it
  if (a.fan_in_fan_out && a.Wq.format != WFormat::F32)
    napi::fail("ERR_ARGUMENT", f.what, "fanInFanOut", "false for a weight in reduced precision", "true");
  a.A = f.floats("A", d.Ir);
  a.B = f.floats("B", d.rO);
  a.scaling = static_cast<float>(f.number("scaling"));
}

Job parse_forward(const Fields& f) {
  const Dims d = read_dims(f);
  ForwardArgs a;
  Bf16Io io;
  const bool bf16 = bf16_acts(f);
  read_layer(f, d, a, bf16, io);
  a.bias = f.floats("bias", d.O, true);
  a.dropout = read_dropout(f, d, true);
  a.s = f.floats("s", d.Mr);
  a.y = activation<float>(f, bf16, "y", d.MO, nullptr, &io.y);
  const bool fused = f.boolean("fused", true);
  const double macs = double(d.M) * double(d.I * d.O + d.r * (d.I + d.O));
  return Job{[a, fused, io] { lora_forward(a, fused, io); }, macs};
}

Job parse_backward(const Fields& f) {
  const Dims d = read_dims(f);
  BackwardArgs a;
  Bf16Io io;
  const bool bf16 = bf16_acts(f);
  read_layer(f, d, a, bf16, io);
  a.s = f.floats("s", d.Mr);
  a.dy = activation<const float>(f, bf16, "dy", d.MO, &io.dy, nullptr);
  a.dropout = read_dropout(f, d, false);
  a.ds = f.floats("ds", d.Mr);
  a.dx = activation<float>(f, bf16, "dx", d.MI, nullptr, &io.dx, true);
  const bool want_dx = a.dx != nullptr || io.dx != nullptr;
  if (a.dropout.p > 0.0f && want_dx) a.lora_dx = f.floats("loraDx", d.MI);
  a.dA = f.floats("dA", d.Ir);
  a.dB = f.floats("dB", d.rO);
  a.accumulate = f.boolean("accumulate", false);  // as the CUDA addon: an output is overwritten unless asked
  const bool fused = f.boolean("fused", true);
  const double macs = double(d.M) * double(d.I * d.O + 2 * d.r * (d.I + d.O));
  return Job{[a, fused, io] { lora_backward(a, fused, io); }, macs};
}

Job parse_linear_forward(const Fields& f) {
  const int64_t M = f.dim("M"), I = f.dim("I"), O = f.dim("O");
  Bf16Io io;
  const bool bf16 = bf16_acts(f);
  const float* x = activation<const float>(f, bf16, "x", product(M, I, f.what), &io.x, nullptr);
  const FrozenW W = read_frozen(f, O, I);
  const float* bias = f.floats("bias", O, true);
  float* y = activation<float>(f, bf16, "y", product(M, O, f.what), nullptr, &io.y);
  return Job{[=] { linear_forward(x, W, bias, y, M, io); }, double(M) * double(I) * double(O)};
}

Job parse_linear_backward(const Fields& f) {
  const int64_t M = f.dim("M"), I = f.dim("I"), O = f.dim("O");
  Bf16Io io;
  const bool bf16 = bf16_acts(f);
  const float* dy = activation<const float>(f, bf16, "dy", product(M, O, f.what), &io.dy, nullptr);
  const FrozenW W = read_frozen(f, O, I);
  float* dx = activation<float>(f, bf16, "dx", product(M, I, f.what), nullptr, &io.dx);
  return Job{[=] { linear_backward(dy, W, dx, M, io); }, double(M) * double(I) * double(O)};
}

// quantize({ format: 'int8' | 'nf4', W (O, I) Float32Array, O, I, q, scale }): q an Int8Array (O·I)
// and scale (O), or q a Uint8Array (O·I / 2) and scale the absmax (O·I / 64).
Napi::Value Quantize(const Napi::CallbackInfo& info) {
  return napi::call(info, "quantize", [](Napi::Env env, const Fields& f) -> Napi::Value {
    const int64_t O = f.dim("O"), I = f.dim("I"), n = product(O, I, f.what);
    const int format = f.choice("format", {"int8", "nf4"});
    const float* W = f.floats("W", n);
    if (format == 0) {
      quantize_int8(W, O, I, f.int8s("q", n), f.floats("scale", O));
    } else {
      if (I % kNf4Block != 0)
        napi::fail("ERR_SHAPE", f.what, "I", "a multiple of 64 for an nf4 weight (its blocks run along I)", napi::describe(f.get("I")));
      quantize_nf4(W, n, f.bytes("q", (n + 1) / 2), f.floats("scale", n / kNf4Block));
    }
    return env.Undefined();
  });
}

// dequantize({ wFormat, W, wScale | wAbsmax, O, I, o0, o1, out }): Ŵ rows [o0, o1) into out, as the
// GEMMs use them (rounded to bf16).
Napi::Value Dequantize(const Napi::CallbackInfo& info) {
  return napi::call(info, "dequantize", [](Napi::Env env, const Fields& f) -> Napi::Value {
    const int64_t O = f.dim("O"), I = f.dim("I");
    const FrozenW W = read_frozen(f, O, I);
    const int64_t o0 = f.dim_or("o0", 0), o1 = f.dim_or("o1", O);
    if (!(o0 <= o1 && o1 <= O)) napi::fail("ERR_SHAPE", f.what, "o1", "o0 <= o1 <= O", napi::describe(f.get("o1")));
    dequantize_rows(W, o0, o1, f.floats("out", product(o1 - o0, I, f.what)));
    return env.Undefined();
  });
}

// toBf16({ src: Float32Array, dst: Uint16Array, n }) and fromBf16({ src: Uint16Array, dst: Float32Array, n }).
Napi::Value ToBf16(const Napi::CallbackInfo& info) {
  return napi::call(info, "toBf16", [](Napi::Env env, const Fields& f) -> Napi::Value {
    const int64_t n = f.count("n");
    f32_to_bf16(f.floats("src", n), f.halves("dst", n), n);
    return env.Undefined();
  });
}
Napi::Value FromBf16(const Napi::CallbackInfo& info) {
  return napi::call(info, "fromBf16", [](Napi::Env env, const Fields& f) -> Napi::Value {
    const int64_t n = f.count("n");
    bf16_to_f32(f.halves("src", n), f.floats("dst", n), n);
    return env.Undefined();
  });
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
                                      {"loraBackwardAsync", LoraBackwardAsync}, {"merge", Merge},
                                      {"quantize", Quantize}, {"dequantize", Dequantize}, {"toBf16", ToBf16},
                                      {"fromBf16", FromBf16}});
}

}  // namespace fused_lora::addon
