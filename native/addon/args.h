// Reading and checking arguments at the native boundary. The TS layer validates first and gives the
// friendlier messages; these checks are the second line that keeps a bad ops.* call (or a bug in the
// TS layer) from reaching a kernel: every buffer is checked for type and length before its pointer
// is taken. Failures throw a LoraError (or an Error with .code if the class was never registered).
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

namespace fused_lora::addon {

// Thrown inside the addon and turned into a JS LoraError by the binding functions.
struct ArgError {
  std::string code;
  std::string message;
};

// Registers the JS LoraError class used for native errors in the calling env (lib/binding.ts calls it
// once per env: the main thread and each worker_thread).
void set_error_class(const Napi::Function& ctor);
Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& message);

// Object fields. `what` names the caller (e.g. "ops.loraForward") for messages.
struct Fields {
  Napi::Object obj;
  std::string what;
  // When set, every buffer whose pointer floats()/bytes() hand out is recorded here, so an async job
  // can hold the typed arrays themselves (not only the arguments object, whose fields could be
  // reassigned, letting the GC free a buffer the kernel is still using).
  std::vector<Napi::Value>* keep = nullptr;

  bool has(const char* key) const;
  // An integer in [0, 2^31 − 1]: the native index type of BLAS and our kernels.
  int64_t dim(const char* key) const;
  double number(const char* key) const;        // finite
  bool boolean(const char* key, bool fallback) const;
  uint64_t seed(const char* key) const;         // integer in [0, 2^53]
  std::string string(const char* key, const std::string& fallback) const;
  // A Float32Array with at least `need` elements; null when optional and absent (undefined/null).
  float* floats(const char* key, int64_t need, bool optional = false) const;
  uint8_t* bytes(const char* key, int64_t need, bool optional = false) const;
};

// a·b with an overflow check against 2^53 (exact in a double, and in JS).
int64_t product(int64_t a, int64_t b, const std::string& what);

}  // namespace fused_lora::addon
