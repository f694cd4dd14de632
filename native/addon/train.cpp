// Training exports: read the arguments object, check every buffer's type and length (the TS layer
// has checked shapes and options first, with friendlier messages), call one kernel. All of them are
// synchronous: each is a single memory-bound pass, shorter than an AsyncWorker's round trip.
#include "train.h"

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "args.h"
#include "fused_lora/train.h"

namespace fused_lora::addon {
namespace {

constexpr double kMaxElems = 9007199254740992.0;  // 2^53, as lib/validate.ts's MAX_ELEMENTS

// Runs `body` with the arguments object, turning an ArgError into a JS LoraError.
template <class Body>
Napi::Value guarded(const Napi::CallbackInfo& info, const char* what, const Body& body) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject())
    throw make_error(env, "ERR_ARGUMENT", std::string(what) + ": expected an arguments object");
  try {
    return body(env, Fields{info[0].As<Napi::Object>(), what});
  } catch (const ArgError& e) {
    throw make_error(env, e.code, e.message);
  }
}

// An element count: an integer in [0, 2^53] (a tensor's size, which may exceed int32's range).
int64_t count(const Fields& f, const char* key) {
  Napi::Value v = f.obj.Get(key);
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  if (!(d >= 0 && d <= kMaxElems && std::floor(d) == d))
    throw ArgError{"ERR_SHAPE", f.what + ": expected an element count (an integer in [0, 2^53]) for " + key};
  return static_cast<int64_t>(d);
}

std::string num(double d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", d);
  return buf;
}

// A finite number in [lo, hi), or (lo, hi) with lo_open; hi = INFINITY for no upper bound.
double in_range(const Fields& f, const char* key, double lo, double hi, bool lo_open = false) {
  const double d = f.number(key);
  if (!(lo_open ? d > lo : d >= lo) || !(d < hi))
    throw ArgError{"ERR_ARGUMENT", f.what + ": expected a number in " + (lo_open ? "(" : "[") + num(lo) + ", " +
                                       (std::isinf(hi) ? "Infinity" : num(hi)) + ") for " + key + " but received number " + num(d)};
  return d;
}

// An Int32Array with at least `need` elements. (Fields reads float and byte buffers only; class
// labels are the one int32 input, so the reader lives here.)
const int32_t* ints(const Fields& f, const char* key, int64_t need) {
  Napi::Value v = f.obj.Get(key);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw ArgError{"ERR_DTYPE", f.what + ": expected an Int32Array for " + key + " but received " +
                                    (v.IsTypedArray() ? "another TypedArray" : v.IsUndefined() ? "undefined" : "a non-Int32Array value")};
  Napi::Int32Array a = v.As<Napi::Int32Array>();
  if (static_cast<int64_t>(a.ElementLength()) < need)
    throw ArgError{"ERR_SHAPE", f.what + ": expected at least " + std::to_string(need) + " elements in " + key +
                                    " but received " + std::to_string(a.ElementLength())};
  return a.Data();
}

float* floats_of(const Fields& f, const Napi::Value& v, const std::string& name, int64_t& n) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw ArgError{"ERR_DTYPE", f.what + ": expected a Float32Array for " + name};
  Napi::Float32Array a = v.As<Napi::Float32Array>();
  n = static_cast<int64_t>(a.ElementLength());
  return a.Data();
}

// adamwStep({ n, param, grad, expAvg, expAvgSq, lr, beta1, beta2, eps, weightDecay, step })
Napi::Value AdamWStep(const Napi::CallbackInfo& info) {
  return guarded(info, "adamwStep", [](Napi::Env env, const Fields& f) -> Napi::Value {
    const int64_t n = count(f, "n");
    float* p = f.floats("param", n);
    const float* g = f.floats("grad", n);
    float* m = f.floats("expAvg", n);
    float* v = f.floats("expAvgSq", n);
    AdamWArgs a;
    a.lr = in_range(f, "lr", 0, INFINITY, true);
    a.beta1 = in_range(f, "beta1", 0, 1);
    a.beta2 = in_range(f, "beta2", 0, 1);
    a.eps = in_range(f, "eps", 0, INFINITY, true);
    a.weight_decay = in_range(f, "weightDecay", 0, INFINITY);
    a.step = static_cast<int64_t>(f.seed("step"));
    if (a.step < 1) throw ArgError{"ERR_ARGUMENT", "adamwStep: expected step >= 1 but received 0"};
    adamw_update(p, g, m, v, n, a);
    return env.Undefined();
  });
}

// sgdStep({ n, param, grad, momentumBuffer, lr, momentum, dampening, weightDecay, nesterov, firstStep })
Napi::Value SgdStep(const Napi::CallbackInfo& info) {
  return guarded(info, "sgdStep", [](Napi::Env env, const Fields& f) -> Napi::Value {
    const int64_t n = count(f, "n");
    SgdArgs a;
    a.lr = in_range(f, "lr", 0, INFINITY, true);
    a.momentum = in_range(f, "momentum", 0, INFINITY);
    a.dampening = f.number("dampening");
    a.weight_decay = in_range(f, "weightDecay", 0, INFINITY);
    a.nesterov = f.boolean("nesterov", false);
    a.first_step = f.boolean("firstStep", true);
    float* p = f.floats("param", n);
    const float* g = f.floats("grad", n);
    float* buf = f.floats("momentumBuffer", n, a.momentum == 0.0);
    sgd_update(p, g, buf, n, a);
    return env.Undefined();
  });
}

// clipGradNorm({ grads: Float32Array[], maxNorm, errorIfNonfinite }) -> the total L2 norm
Napi::Value ClipGradNorm(const Napi::CallbackInfo& info) {
  return guarded(info, "clipGradNorm", [](Napi::Env env, const Fields& f) -> Napi::Value {
    Napi::Value list = f.obj.Get("grads");
    if (!list.IsArray()) throw ArgError{"ERR_ARGUMENT", "clipGradNorm: expected an array of Float32Array for grads"};
    Napi::Array arr = list.As<Napi::Array>();
    std::vector<float*> grads(arr.Length());
    std::vector<int64_t> sizes(arr.Length());
    for (uint32_t i = 0; i < arr.Length(); ++i) grads[i] = floats_of(f, arr.Get(i), "grads[" + std::to_string(i) + "]", sizes[i]);
    const double max_norm = in_range(f, "maxNorm", 0, INFINITY);
    const bool strict = f.boolean("errorIfNonfinite", false);
    const double total = clip_grad_norm(grads.data(), sizes.data(), static_cast<int64_t>(grads.size()), max_norm, strict);
    if (strict && !std::isfinite(total))
      throw ArgError{"ERR_NOT_FINITE", "clipGradNorm: expected a finite total gradient norm but received " + std::to_string(total) +
                                           "; the gradients are unchanged"};
    return Napi::Number::New(env, total);
  });
}

// mseLoss({ n, y, target, grad }) -> mean((y − target)²); grad = 2(y − target)/n
Napi::Value MseLoss(const Napi::CallbackInfo& info) {
  return guarded(info, "mseLoss", [](Napi::Env env, const Fields& f) -> Napi::Value {
    const int64_t n = count(f, "n");
    if (n < 1) throw ArgError{"ERR_SHAPE", "mseLoss: expected at least one element but received 0"};
    const float* y = f.floats("y", n);
    const float* t = f.floats("target", n);
    float* grad = f.floats("grad", n);
    return Napi::Number::New(env, mse_loss(y, t, grad, n));
  });
}

// crossEntropyLoss({ M, C, logits, labels: Int32Array, grad }) -> mean over rows of −log softmax[label]
Napi::Value CrossEntropyLoss(const Napi::CallbackInfo& info) {
  return guarded(info, "crossEntropyLoss", [](Napi::Env env, const Fields& f) -> Napi::Value {
    const int64_t M = f.dim("M"), C = f.dim("C");
    if (M < 1 || C < 1) throw ArgError{"ERR_SHAPE", "crossEntropyLoss: expected M >= 1 and C >= 1"};
    const int64_t MC = product(M, C, f.what);
    const float* logits = f.floats("logits", MC);
    const int32_t* labels = ints(f, "labels", M);
    float* grad = f.floats("grad", MC);
    for (int64_t m = 0; m < M; ++m)  // the kernel indexes with these: never out of the row
      if (labels[m] < 0 || labels[m] >= C)
        throw ArgError{"ERR_ARGUMENT", "crossEntropyLoss: expected a class index in [0, " + std::to_string(C) + ") for labels[" +
                                           std::to_string(m) + "] but received " + std::to_string(labels[m])};
    return Napi::Number::New(env, cross_entropy_loss(logits, labels, grad, M, C));
  });
}

using Forward = void (*)(const float*, float*, int64_t);
using Backward = void (*)(const float*, const float*, float*, int64_t);

// {relu,gelu}Forward({ n, x, y })
Napi::Value activation_forward(const Napi::CallbackInfo& info, const char* what, Forward kernel) {
  return guarded(info, what, [kernel](Napi::Env env, const Fields& f) -> Napi::Value {
    const int64_t n = count(f, "n");
    kernel(f.floats("x", n), f.floats("y", n), n);
    return env.Undefined();
  });
}

// {relu,gelu}Backward({ n, x, dy, dx }): x is the forward's input
Napi::Value activation_backward(const Napi::CallbackInfo& info, const char* what, Backward kernel) {
  return guarded(info, what, [kernel](Napi::Env env, const Fields& f) -> Napi::Value {
    const int64_t n = count(f, "n");
    kernel(f.floats("x", n), f.floats("dy", n), f.floats("dx", n), n);
    return env.Undefined();
  });
}

Napi::Value ReluForward(const Napi::CallbackInfo& info) { return activation_forward(info, "reluForward", relu_forward); }
Napi::Value ReluBackward(const Napi::CallbackInfo& info) { return activation_backward(info, "reluBackward", relu_backward); }
Napi::Value GeluForward(const Napi::CallbackInfo& info) { return activation_forward(info, "geluForward", gelu_forward); }
Napi::Value GeluBackward(const Napi::CallbackInfo& info) { return activation_backward(info, "geluBackward", gelu_backward); }

}  // namespace

void RegisterTrain(Napi::Env env, Napi::Object exports) {
  exports.Set("adamwStep", Napi::Function::New(env, AdamWStep, "adamwStep"));
  exports.Set("sgdStep", Napi::Function::New(env, SgdStep, "sgdStep"));
  exports.Set("clipGradNorm", Napi::Function::New(env, ClipGradNorm, "clipGradNorm"));
  exports.Set("mseLoss", Napi::Function::New(env, MseLoss, "mseLoss"));
  exports.Set("crossEntropyLoss", Napi::Function::New(env, CrossEntropyLoss, "crossEntropyLoss"));
  exports.Set("reluForward", Napi::Function::New(env, ReluForward, "reluForward"));
  exports.Set("reluBackward", Napi::Function::New(env, ReluBackward, "reluBackward"));
  exports.Set("geluForward", Napi::Function::New(env, GeluForward, "geluForward"));
  exports.Set("geluBackward", Napi::Function::New(env, GeluBackward, "geluBackward"));
}

}  // namespace fused_lora::addon
