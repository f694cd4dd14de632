// Training on the device: the AdamW step and the losses with their gradients.
#include <napi.h>

#include "entries.h"
#include "handles.h"
#include "napi/call.h"

namespace fused_lora::cuda_addon {
namespace {

using fc::DType;

// adamw({ n, param, grad, m, v, lr, beta1, beta2, eps, weightDecay, step }) — fp32 buffers.
Napi::Value AdamW(const Napi::CallbackInfo& info) {
  return napi::call<DeviceFields>(info, "adamw", [](Napi::Env env, const DeviceFields& a) -> Napi::Value {
    const int64_t n = a.count("n", 1);
    float* p = a.f32("param", n);
    const float* g = a.f32("grad", n);
    float* m = a.f32("m", n);
    float* v = a.f32("v", n);
    auto hyper = [&](const char* key, double fallback) { return static_cast<float>(a.number_or(key, fallback)); };
    check(fc::adamw(n, p, g, m, v, hyper("lr", 1e-3), hyper("beta1", 0.9), hyper("beta2", 0.999), hyper("eps", 1e-8),
                    hyper("weightDecay", 0.01), static_cast<int64_t>(a.seed("step", 1)), default_stream(env)),
          a.what);
    return env.Undefined();
  });
}

// mseLoss({ dtype, n, pred, target, loss (fp32 scalar), dpred? })
Napi::Value MseLoss(const Napi::CallbackInfo& info) {
  return napi::call<DeviceFields>(info, "mseLoss", [](Napi::Env env, const DeviceFields& a) -> Napi::Value {
    const DType t = a.dtype("dtype");
    const int64_t n = a.count("n", 1);
    void* dpred = a.matrix("dpred", 1, n, n, t, true);
    const void* pred = a.matrix("pred", 1, n, n, t);
    const void* target = a.matrix("target", 1, n, n, t);
    check(fc::mse_loss(t, n, pred, target, a.f32("loss", 1), dpred, default_stream(env)), a.what);
    return env.Undefined();
  });
}

// crossEntropyLoss({ dtype, N, C, logits, ld?, labels (int32), loss, dlogits?, ldd? })
Napi::Value CrossEntropyLoss(const Napi::CallbackInfo& info) {
  return napi::call<DeviceFields>(info, "crossEntropyLoss", [](Napi::Env env, const DeviceFields& a) -> Napi::Value {
    const DType t = a.dtype("dtype");
    const int64_t N = a.dim("N", 1), C = a.dim("C", 1), ld = a.ld("ld", C, "C"), ldd = a.ld("ldd", C, "C");
    void* dlogits = a.matrix("dlogits", N, C, ldd, t, true);
    const void* logits = a.matrix("logits", N, C, ld, t);
    const auto* labels = static_cast<const int32_t*>(a.buffer("labels", static_cast<size_t>(N) * sizeof(int32_t))->ptr());
    check(fc::cross_entropy_loss(t, N, C, logits, ld, labels, a.f32("loss", 1), dlogits, ldd, default_stream(env)), a.what);
    return env.Undefined();
  });
}

}  // namespace

void RegisterTrain(Napi::Env env, Napi::Object exports) {
  napi::add_functions(env, exports, {{"adamw", AdamW}, {"mseLoss", MseLoss},
                                      {"crossEntropyLoss", CrossEntropyLoss}});
}

}  // namespace fused_lora::cuda_addon
