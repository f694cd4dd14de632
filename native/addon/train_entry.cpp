// The training exports: optimizer steps, gradient clipping, losses, activations. Each reads and
// checks its options (napi/fields.h) and calls one kernel of native/cpu (fused_lora/train.h). All
// are synchronous: each is a single memory-bound pass, shorter than an AsyncWorker's round trip.
#include <napi.h>

#include <cmath>
#include <string>
#include <vector>

#include "entries.h"
#include "fused_lora/train.h"
#include "napi/call.h"

namespace fused_lora::addon {
namespace {

using napi::Fields;

// adamwStep({ n, param, grad, expAvg, expAvgSq, lr, beta1, beta2, eps, weightDecay, step })
Napi::Value AdamWStep(const Napi::CallbackInfo& info) {
  return napi::call(info, "adamwStep", [](Napi::Env env, const Fields& f) -> Napi::Value {
    const int64_t n = f.count("n");
    float* p = f.floats("param", n);
    const float* g = f.floats("grad", n);
    float* m = f.floats("expAvg", n);
    float* v = f.floats("expAvgSq", n);
    AdamWArgs a;
    a.lr = f.number_in("lr", 0, INFINITY, true);
    a.beta1 = f.number_in("beta1", 0, 1);
    a.beta2 = f.number_in("beta2", 0, 1);
    a.eps = f.number_in("eps", 0, INFINITY, true);
    a.weight_decay = f.number_in("weightDecay", 0, INFINITY);
    a.step = static_cast<int64_t>(f.seed("step", 1));
    adamw_update(p, g, m, v, n, a);
    return env.Undefined();
  });
}

// sgdStep({ n, param, grad, momentumBuffer, lr, momentum, dampening, weightDecay, nesterov, firstStep })
Napi::Value SgdStep(const Napi::CallbackInfo& info) {
  return napi::call(info, "sgdStep", [](Napi::Env env, const Fields& f) -> Napi::Value {
    const int64_t n = f.count("n");
    SgdArgs a;
    a.lr = f.number_in("lr", 0, INFINITY, true);
    a.momentum = f.number_in("momentum", 0, INFINITY);
    a.dampening = f.number("dampening");
    a.weight_decay = f.number_in("weightDecay", 0, INFINITY);
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
  return napi::call(info, "clipGradNorm", [](Napi::Env env, const Fields& f) -> Napi::Value {
    Napi::Value list = f.get("grads");
    if (!list.IsArray()) napi::fail("ERR_ARGUMENT", f.what, "grads", "an array of Float32Array", napi::describe(list));
    Napi::Array arr = list.As<Napi::Array>();
    std::vector<float*> grads(arr.Length());
    std::vector<int64_t> sizes(arr.Length());
    for (uint32_t i = 0; i < arr.Length(); ++i) {
      Napi::Value g = arr.Get(i);
      grads[i] = f.floats_of(g, "grads[" + std::to_string(i) + "]", 0);
      sizes[i] = static_cast<int64_t>(g.As<Napi::Float32Array>().ElementLength());
    }
    const double max_norm = f.number_in("maxNorm", 0, INFINITY);
    const bool strict = f.boolean("errorIfNonfinite", false);
    const double total = clip_grad_norm(grads.data(), sizes.data(), static_cast<int64_t>(grads.size()), max_norm, strict);
    if (strict && !std::isfinite(total))
      throw napi::Failure{"ERR_NOT_FINITE", "clipGradNorm: expected a finite total gradient norm but received " +
                                                napi::describe(Napi::Number::New(env, total)) + "; the gradients are unchanged"};
    return Napi::Number::New(env, total);
  });
}

// mseLoss({ n, y, target, grad }) -> mean((y − target)²); grad = 2(y − target)/n
Napi::Value MseLoss(const Napi::CallbackInfo& info) {
  return napi::call(info, "mseLoss", [](Napi::Env env, const Fields& f) -> Napi::Value {
    const int64_t n = f.count("n", 1);
    const float* y = f.floats("y", n);
    const float* t = f.floats("target", n);
    float* grad = f.floats("grad", n);
    return Napi::Number::New(env, mse_loss(y, t, grad, n));
  });
}

// crossEntropyLoss({ M, C, logits, labels: Int32Array, grad }) -> mean over rows of −log softmax[label]
Napi::Value CrossEntropyLoss(const Napi::CallbackInfo& info) {
  return napi::call(info, "crossEntropyLoss", [](Napi::Env env, const Fields& f) -> Napi::Value {
    const int64_t M = f.dim("M", 1), C = f.dim("C", 1);
    const int64_t MC = napi::product(M, C, f.what);
    const float* logits = f.floats("logits", MC);
    const int32_t* labels = f.ints("labels", M);
    float* grad = f.floats("grad", MC);
    for (int64_t m = 0; m < M; ++m)  // the kernel indexes with these: never out of the row
      if (labels[m] < 0 || labels[m] >= C)
        napi::fail("ERR_ARGUMENT", f.what, "labels[" + std::to_string(m) + "]", "a class index in [0, " + std::to_string(C) + ")",
                   "number " + std::to_string(labels[m]));
    return Napi::Number::New(env, cross_entropy_loss(logits, labels, grad, M, C));
  });
}

using Forward = void (*)(const float*, float*, int64_t);
using Backward = void (*)(const float*, const float*, float*, int64_t);

// {relu,gelu}Forward({ n, x, y })
Napi::Value activation_forward(const Napi::CallbackInfo& info, const char* what, Forward kernel) {
  return napi::call(info, what, [kernel](Napi::Env env, const Fields& f) -> Napi::Value {
    const int64_t n = f.count("n");
    kernel(f.floats("x", n), f.floats("y", n), n);
    return env.Undefined();
  });
}

// {relu,gelu}Backward({ n, x, dy, dx }): x is the forward's input
Napi::Value activation_backward(const Napi::CallbackInfo& info, const char* what, Backward kernel) {
  return napi::call(info, what, [kernel](Napi::Env env, const Fields& f) -> Napi::Value {
    const int64_t n = f.count("n");
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
  napi::add_functions(env, exports, {{"adamwStep", AdamWStep}, {"sgdStep", SgdStep},
                                      {"clipGradNorm", ClipGradNorm}, {"mseLoss", MseLoss},
                                      {"crossEntropyLoss", CrossEntropyLoss}, {"reluForward", ReluForward},
                                      {"reluBackward", ReluBackward}, {"geluForward", GeluForward},
                                      {"geluBackward", GeluBackward}});
}

}  // namespace fused_lora::addon
