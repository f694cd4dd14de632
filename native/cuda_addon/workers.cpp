#include "workers.h"

#include <vector>

#include "handles.h"
#include "napi/call.h"

namespace fused_lora::cuda_addon {
namespace {

class SyncWorker : public Napi::AsyncWorker {
 public:
  SyncWorker(Napi::Env env, fc::Stream s) : Napi::AsyncWorker(env, "fused_lora_cuda_sync"), stream_(s), deferred_(env) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    status_ = fc::stream_synchronize(stream_);
    if (status_ != fc::Status::Ok) message_ = fc::last_error();
  }
  void OnOK() override {
    if (status_ != fc::Status::Ok)
      deferred_.Reject(napi::make_error(Env(), failure(status_, "synchronizeAsync", message_)).Value());
    else
      deferred_.Resolve(Env().Undefined());
  }

 private:
  fc::Stream stream_;
  Napi::Promise::Deferred deferred_;
  fc::Status status_ = fc::Status::Ok;
  std::string message_;  // last_error() is per thread: taken on the worker's
};

class DownloadWorker : public Napi::AsyncWorker {
 public:
  DownloadWorker(Napi::Env env, Napi::Object buffer, const Region& r, fc::DType t, fc::Stream s)
      : Napi::AsyncWorker(env, "fused_lora_cuda_download"), src_(r.buf->ptr()), t_(t), rows_(r.rows), cols_(r.cols), ld_(r.ld),
        stream_(s), deferred_(env), host_(static_cast<size_t>(r.rows * r.cols)) {
    keep_ = Napi::Persistent(buffer);  // the device buffer stays alive until the copy is done
  }
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    status_ = fc::download_f32(host_.data(), cols_, src_, t_, ld_, rows_, cols_, stream_);
    if (status_ != fc::Status::Ok) message_ = fc::last_error();
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (status_ != fc::Status::Ok) {
      deferred_.Reject(napi::make_error(env, failure(status_, "downloadAsync", message_)).Value());
      return;
    }
    Napi::Float32Array out = Napi::Float32Array::New(env, host_.size());
    std::copy(host_.begin(), host_.end(), out.Data());
    deferred_.Resolve(out);
  }

 private:
  const void* src_;
  fc::DType t_;
  int64_t rows_, cols_, ld_;
  fc::Stream stream_;
  Napi::Promise::Deferred deferred_;
  std::vector<float> host_;
  Napi::ObjectReference keep_;
  fc::Status status_ = fc::Status::Ok;
  std::string message_;
};

}  // namespace

Napi::Value SynchronizeAsync(const Napi::CallbackInfo& info) {
  auto* w = new SyncWorker(info.Env(), default_stream(info.Env()));
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

Napi::Value DownloadAsync(const Napi::CallbackInfo& info) {
  return napi::call<DeviceFields>(info, "downloadAsync", [](Napi::Env env, const DeviceFields& a) -> Napi::Value {
    const fc::DType t = a.dtype("dtype");
    const Region r = a.region("buffer", t);
    auto* w = new DownloadWorker(env, a.get("buffer").As<Napi::Object>(), r, t, default_stream(env));
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
  });
}

}  // namespace fused_lora::cuda_addon
