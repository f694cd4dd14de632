// Running a kernel call, on the JS thread or on the libuv pool. An export parses its options into a
// Job (one parser per op, shared by its sync and async entry points, so both check the same
// things); run_sync runs it at once, run_async on an AsyncWorker that holds every JS buffer the job
// touches and settles a Promise.
#pragma once
#include <napi.h>

#include <functional>

#include "napi/fields.h"

namespace fused_lora::addon {

// A kernel call, and its size in multiply-adds (to decide whether it takes the BLAS gate).
struct Job {
  std::function<void()> run;
  double macs = 0;
};

using Parse = Job (*)(const napi::Fields& f);

// (args) -> undefined
Napi::Value run_sync(const Napi::CallbackInfo& info, const char* what, Parse parse);
// (args) -> Promise<void>; bad arguments throw at once, as run_sync's do.
Napi::Value run_async(const Napi::CallbackInfo& info, const char* what, Parse parse);

}  // namespace fused_lora::addon
