#include "workers.h"

#include <vector>

#include "handles.h"

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
      deferred_.Reject(make_error(Env(), status_ == fc::Status::NoDevice ? "ERR_DEVICE" : "ERR_BACKEND",
                                  "synchronize: " + message_).Value());
    else
      deferred_.Resolve(Env().Undefined());
  }

 private:
  fc::Stream stream_;
  Napi::Promise::Deferred deferred_;
  fc::Status status_ = fc::Status::Ok;
  std::string message_;
};

class DownloadWorker : public Napi::AsyncWorker {
 public:
  DownloadWorker(Napi::Env env, Napi::Object buffer, DeviceBuffer* b, fc::DType t, int64_t rows, int64_t cols, int64_t ld,
                 fc::Stream s)
      : Napi::AsyncWorker(env, "fused_lora_cuda_download"), src_(b->ptr()), t_(t), rows_(rows), cols_(cols), ld_(ld),
        stream_(s), deferred_(env), host_(static_cast<size_t>(rows * cols)) {
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
      deferred_.Reject(make_error(env, "ERR_BACKEND", "downloadAsync: " + message_).Value());
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
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw make_error(env, "ERR_ARGUMENT", "downloadAsync: expected an options object");
  Args a{env, info[0].As<Napi::Object>(), "downloadAsync"};
  fc::DType t = a.dtype("dtype");
  int64_t rows = a.dim("rows"), cols = a.dim("cols"), ld = a.int_or("ld", cols);
  if (ld < cols) throw make_error(env, "ERR_SHAPE", "downloadAsync: expected ld >= cols");
  DeviceBuffer* b = a.buffer("buffer", span_bytes(rows, cols, ld, t));
  auto* w = new DownloadWorker(env, a.obj.Get("buffer").As<Napi::Object>(), b, t, rows, cols, ld, default_stream(env));
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

}  // namespace fused_lora::cuda_addon
