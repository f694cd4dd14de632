#include "workers.h"

#include <exception>
#include <functional>
#include <mutex>
#include <new>
#include <vector>

#include "args.h"
#include "fused_lora/blas.h"
#include "fused_lora/lora.h"

namespace fused_lora::addon {
namespace {

// A kernel call, and its size in multiply-adds (to decide whether it takes the gate below).
struct Job {
  std::function<void()> run;
  double macs = 0;
};

// With a BLAS loaded, large kernels run one at a time per process, each with every core; small ones
// (and every kernel on the built-in GEMM) run side by side.
//
// Why: several layers stepping at once (forwardAsync on the libuv pool, or worker_threads) share one
// BLAS thread pool. OpenBLAS's pthread server has one set of workers: a second caller whose GEMM is
// big enough to thread busy-waits, holding its queue lock, until the first caller's workers are free
// (exec_blas_async in driver/others/blas_server.c), then both share the workers and the cores.
// Measured with 4 layers (M 256, I = O = 1024, r 16) stepping in parallel on 2 cores: without the
// gate +20-70% wall time and +30-50% CPU time against the same steps in turn; with it, parallel and
// in-turn steps take the same time and CPU. Each large kernel is already parallel over all cores,
// so running them in turn loses no throughput. Small kernels (below the size where OpenBLAS starts
// threading) are single-threaded and skip the gate. The built-in pool needs no gate: a caller that
// finds it busy runs its job inline on its own thread, and side by side was 8% faster than in turn.
constexpr double kGateMacs = 262144;  // 2^18: OpenBLAS threads a GEMM from M·N·K > 65536·4

std::mutex& kernel_gate() {
  static std::mutex m;
  return m;
}

void run_job(const Job& job) {
  if (job.macs < kGateMacs || !blas_loaded()) {
    job.run();
    return;
  }
  std::lock_guard<std::mutex> lock(kernel_gate());
  job.run();
}

// Dimensions shared by forward and backward, with the element counts every buffer needs.
struct Dims {
  int64_t M, I, O, r, MI, MO, Mr, Ir, rO, OI;
};

Dims read_dims(const Fields& f) {
  Dims d{};
  d.M = f.dim("M");
  d.I = f.dim("I");
  d.O = f.dim("O");
  d.r = f.dim("r");
  if (d.r < 1) throw ArgError{"ERR_SHAPE", f.what + ": expected rank r >= 1 but received 0"};
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
  dr.p = f.has("dropoutP") ? static_cast<float>(f.number("dropoutP")) : 0.0f;
  if (!(dr.p >= 0.0f && dr.p < 1.0f))
    throw ArgError{"ERR_ARGUMENT", f.what + ": expected dropoutP in [0, 1) but received " + std::to_string(dr.p)};
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

Job parse_forward(const Napi::Object& obj, std::vector<Napi::Value>* keep) {
  Fields f{obj, "loraForward", keep};
  const Dims d = read_dims(f);
  ForwardArgs a;
  a.M = d.M, a.I = d.I, a.O = d.O, a.r = d.r;
  a.x = f.floats("x", d.MI);
  a.W = f.floats("W", d.OI);
  a.fan_in_fan_out = f.boolean("fanInFanOut", false);
  a.bias = f.floats("bias", d.O, true);
  a.A = f.floats("A", d.Ir);
  a.B = f.floats("B", d.rO);
  a.scaling = static_cast<float>(f.number("scaling"));
  a.dropout = read_dropout(f, d, true);
  a.s = f.floats("s", d.Mr);
  a.y = f.floats("y", d.MO);
  const bool fused = f.boolean("fused", true);
  const double macs = double(d.M) * double(d.I * d.O + d.r * (d.I + d.O));
  return Job{[a, fused] { fused ? lora_forward_fused(a) : lora_forward_unfused(a); }, macs};
}

Job parse_backward(const Napi::Object& obj, std::vector<Napi::Value>* keep) {
  Fields f{obj, "loraBackward", keep};
  const Dims d = read_dims(f);
  BackwardArgs a;
  a.M = d.M, a.I = d.I, a.O = d.O, a.r = d.r;
  a.x = f.floats("x", d.MI);
  a.s = f.floats("s", d.Mr);
  a.dy = f.floats("dy", d.MO);
  a.W = f.floats("W", d.OI);
  a.fan_in_fan_out = f.boolean("fanInFanOut", false);
  a.A = f.floats("A", d.Ir);
  a.B = f.floats("B", d.rO);
  a.scaling = static_cast<float>(f.number("scaling"));
  a.dropout = read_dropout(f, d, false);
  a.ds = f.floats("ds", d.Mr);
  a.dx = f.floats("dx", d.MI, true);
  if (a.dropout.p > 0.0f && a.dx != nullptr) a.lora_dx = f.floats("loraDx", d.MI);
  a.dA = f.floats("dA", d.Ir);
  a.dB = f.floats("dB", d.rO);
  a.accumulate = f.boolean("accumulate", true);
  const bool fused = f.boolean("fused", true);
  const double macs = double(d.M) * double(d.I * d.O + 2 * d.r * (d.I + d.O));
  return Job{[a, fused] { fused ? lora_backward_fused(a) : lora_backward_unfused(a); }, macs};
}

Job parse_linear_forward(const Napi::Object& obj, std::vector<Napi::Value>* keep) {
  Fields f{obj, "linearForward", keep};
  const int64_t M = f.dim("M"), I = f.dim("I"), O = f.dim("O");
  const float* x = f.floats("x", product(M, I, f.what));
  const float* W = f.floats("W", product(O, I, f.what));
  const float* bias = f.floats("bias", O, true);
  float* y = f.floats("y", product(M, O, f.what));
  return Job{[=] { linear_forward(x, W, bias, y, M, I, O); }, double(M) * double(I) * double(O)};
}

Job parse_linear_backward(const Napi::Object& obj, std::vector<Napi::Value>* keep) {
  Fields f{obj, "linearBackward", keep};
  const int64_t M = f.dim("M"), I = f.dim("I"), O = f.dim("O");
  const float* dy = f.floats("dy", product(M, O, f.what));
  const float* W = f.floats("W", product(O, I, f.what));
  float* dx = f.floats("dx", product(M, I, f.what));
  return Job{[=] { linear_backward(dy, W, dx, M, I, O); }, double(M) * double(I) * double(O)};
}

Napi::Object args_object(const Napi::CallbackInfo& info, const char* what) {
  if (info.Length() < 1 || !info[0].IsObject())
    throw make_error(info.Env(), "ERR_ARGUMENT", std::string(what) + ": expected an arguments object");
  return info[0].As<Napi::Object>();
}

Napi::Value run_sync(const Napi::CallbackInfo& info, const char* what, Job (*parse)(const Napi::Object&, std::vector<Napi::Value>*)) {
  Napi::Env env = info.Env();
  Job job;
  try {
    job = parse(args_object(info, what), nullptr);
  } catch (const ArgError& e) {
    throw make_error(env, e.code, e.message);
  }
  try {
    run_job(job);
  } catch (const std::bad_alloc&) {
    throw make_error(env, "ERR_BACKEND", std::string(what) + ": out of memory");
  }
  return env.Undefined();
}

// Runs one job on the libuv pool. It holds a reference to every typed array whose memory the job
// touches (recorded while parsing, not just the arguments object, whose fields the caller could
// reassign), so none is collected until the job is done. (Transferring or detaching one of those
// ArrayBuffers while the job runs is not guarded against: the package never does it, and callers
// must not.)
class LoraWorker : public Napi::AsyncWorker {
 public:
  LoraWorker(Napi::Env env, const std::vector<Napi::Value>& buffers, Job job, const char* what)
      : Napi::AsyncWorker(env, what), deferred_(Napi::Promise::Deferred::New(env)), job_(std::move(job)), what_(what) {
    Napi::Array held = Napi::Array::New(env, buffers.size());
    for (size_t i = 0; i < buffers.size(); ++i) held.Set(static_cast<uint32_t>(i), buffers[i]);
    buffers_ = Napi::Persistent(held);
  }
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      run_job(job_);
    } catch (const std::bad_alloc&) {
      SetError("out of memory");
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error& e) override {
    deferred_.Reject(make_error(Env(), "ERR_BACKEND", what_ + ": " + e.Message()).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::Reference<Napi::Array> buffers_;
  Job job_;
  std::string what_;
};

Napi::Value run_async(const Napi::CallbackInfo& info, const char* what, Job (*parse)(const Napi::Object&, std::vector<Napi::Value>*)) {
  Napi::Env env = info.Env();
  Napi::Object args = args_object(info, what);
  Job job;
  std::vector<Napi::Value> buffers;
  try {
    job = parse(args, &buffers);
  } catch (const ArgError& e) {
    throw make_error(env, e.code, e.message);
  }
  auto* w = new LoraWorker(env, buffers, std::move(job), what);
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

}  // namespace

Napi::Value LoraForward(const Napi::CallbackInfo& info) { return run_sync(info, "loraForward", parse_forward); }
Napi::Value LoraBackward(const Napi::CallbackInfo& info) { return run_sync(info, "loraBackward", parse_backward); }
Napi::Value LinearForward(const Napi::CallbackInfo& info) { return run_sync(info, "linearForward", parse_linear_forward); }
Napi::Value LinearBackward(const Napi::CallbackInfo& info) { return run_sync(info, "linearBackward", parse_linear_backward); }
Napi::Value LinearForwardAsync(const Napi::CallbackInfo& info) {
  return run_async(info, "linearForwardAsync", parse_linear_forward);
}
Napi::Value LinearBackwardAsync(const Napi::CallbackInfo& info) {
  return run_async(info, "linearBackwardAsync", parse_linear_backward);
}
Napi::Value LoraForwardAsync(const Napi::CallbackInfo& info) { return run_async(info, "loraForwardAsync", parse_forward); }
Napi::Value LoraBackwardAsync(const Napi::CallbackInfo& info) {
  return run_async(info, "loraBackwardAsync", parse_backward);
}

}  // namespace fused_lora::addon
