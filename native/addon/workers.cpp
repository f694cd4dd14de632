#include "workers.h"

#include <exception>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "fused_lora/blas.h"
#include "napi/call.h"

namespace fused_lora::addon {
namespace {

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

// Runs one job on the libuv pool. It holds a reference to every typed array whose memory the job
// touches (recorded while parsing, not just the arguments object, whose fields the caller could
// reassign), so none is collected until the job is done. (Transferring or detaching one of those
// ArrayBuffers while the job runs is not guarded against: the package never does it, and callers
// must not.)
class JobWorker : public Napi::AsyncWorker {
 public:
  JobWorker(Napi::Env env, const std::vector<Napi::Value>& buffers, Job job, const char* what)
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
    deferred_.Reject(napi::make_error(Env(), "ERR_BACKEND", what_ + ": " + e.Message()).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::Reference<Napi::Array> buffers_;
  Job job_;
  std::string what_;
};

}  // namespace

Napi::Value run_sync(const Napi::CallbackInfo& info, const char* what, Parse parse) {
  return napi::call(info, what, [parse](Napi::Env env, const napi::Fields& f) -> Napi::Value {
    run_job(parse(f));
    return env.Undefined();
  });
}

Napi::Value run_async(const Napi::CallbackInfo& info, const char* what, Parse parse) {
  std::vector<Napi::Value> buffers;
  return napi::call(
      info, what,
      [parse, what, &buffers](Napi::Env env, const napi::Fields& f) -> Napi::Value {
        Job job = parse(f);  // records the buffers it takes into `buffers`
        auto* w = new JobWorker(env, buffers, std::move(job), what);
        Napi::Promise p = w->promise();
        w->Queue();
        return p;
      },
      &buffers);
}

}  // namespace fused_lora::addon
