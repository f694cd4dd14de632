// Reading an export's options object: the native second line of argument checks. lib/ checks
// everything first, with the friendlier messages; these checks keep a bad direct call (or a bug in
// lib/) from reaching a kernel: every number is checked for type and range, and every typed array
// for its type and length before its pointer is handed out. A refusal throws a Failure (env.h)
// with lib/errors.ts's message shape, "<what>: expected <X> for <key> but received <Y>".
#pragma once
#include <napi.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace fused_lora::napi {

constexpr int64_t kMaxDim = 2147483647;          // 2^31 − 1: BLAS's index type (lib/validate.ts MAX_DIM)
constexpr int64_t kMaxElems = 9007199254740992;  // 2^53: exact in a double (lib/validate.ts MAX_ELEMENTS)

// A received value in words, as lib/errors.ts's describe(): "number 1.5", "string \"x\"",
// "Float32Array(4)", "Array(2)", "null", "undefined".
std::string describe(const Napi::Value& v);

// Throws Failure{code, "<what>: expected <expected> for <key> but received <received>"}.
[[noreturn]] void fail(const char* code, const std::string& what, const std::string& key, const std::string& expected,
                       const std::string& received);

// The fields of one options object. `what` names the export in messages ("loraForward").
// A field is absent when undefined or null: the *_or readers then give their fallback, and an
// optional buffer is null.
struct Fields {
  Napi::Object obj;
  std::string what;
  // When set, every typed array whose pointer is handed out is recorded here, so an async job can
  // hold the arrays themselves (not only the options object, whose fields could be reassigned,
  // letting the GC free a buffer the kernel is still using).
  std::vector<Napi::Value>* keep = nullptr;

  Napi::Value get(const char* key) const { return obj.Get(key); }
  bool has(const char* key) const;

  // A dimension: an integer in [min, 2^31 − 1], the kernels' index range. ERR_SHAPE.
  int64_t dim(const char* key, int64_t min = 0) const;
  int64_t dim_or(const char* key, int64_t fallback, int64_t min = 0) const;
  // An element count or a leading dimension of a buffer: an integer in [min, 2^53]. ERR_SHAPE.
  int64_t count(const char* key, int64_t min = 0) const;
  int64_t count_or(const char* key, int64_t fallback, int64_t min = 0) const;
  // A seed or a step: an integer in [min, 2^53]. ERR_ARGUMENT.
  uint64_t seed(const char* key, int64_t min = 0) const;
  // A finite number. ERR_ARGUMENT.
  double number(const char* key) const;
  double number_or(const char* key, double fallback) const;
  // A finite number in [lo, hi), or (lo, hi) when lo_open; hi = INFINITY for no upper bound.
  double number_in(const char* key, double lo, double hi, bool lo_open = false) const;
  // Any number, NaN and ±Infinity included (a fill value).
  double any_number_or(const char* key, double fallback) const;
  bool boolean(const char* key, bool fallback) const;
  std::string string(const char* key, const std::string& fallback) const;
  // The index of the string in `options` the field holds; `fallback` when absent (-1: required).
  int choice(const char* key, std::initializer_list<const char*> options, int fallback = -1,
             const char* code = "ERR_ARGUMENT") const;

  // A typed array of at least `need` elements (a wrong type is ERR_DTYPE, a short one ERR_SHAPE);
  // null when optional and absent.
  float* floats(const char* key, int64_t need, bool optional = false) const;
  uint8_t* bytes(const char* key, int64_t need, bool optional = false) const;
  int32_t* ints(const char* key, int64_t need, bool optional = false) const;
  uint16_t* halves(const char* key, int64_t need, bool optional = false) const;  // Uint16Array (bf16 bits)
  int8_t* int8s(const char* key, int64_t need, bool optional = false) const;
  // The same for a value that is not a field of obj (an element of an array field), named `name`.
  float* floats_of(const Napi::Value& v, const std::string& name, int64_t need) const;
};

// a·b, refused (ERR_SHAPE) above 2^53 elements.
int64_t product(int64_t a, int64_t b, const std::string& what);

}  // namespace fused_lora::napi
