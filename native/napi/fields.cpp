#include "napi/fields.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "napi/env.h"

namespace fused_lora::napi {
namespace {

// A double as JavaScript prints it (the shortest form that reads back the same).
std::string js_number(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  char buf[32];
  if (std::fabs(d) < 1e21 && std::floor(d) == d) {  // integers print in full below 1e21, as in JS
    std::snprintf(buf, sizeof buf, "%.0f", d == 0 ? 0.0 : d);
    return buf;
  }
  for (int digits = 1; digits <= 17; ++digits) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  return buf;
}

const char* typed_array_name(napi_typedarray_type t) {
  switch (t) {
    case napi_int8_array: return "Int8Array";
    case napi_uint8_array: return "Uint8Array";
    case napi_uint8_clamped_array: return "Uint8ClampedArray";
    case napi_int16_array: return "Int16Array";
    case napi_uint16_array: return "Uint16Array";
    case napi_int32_array: return "Int32Array";
    case napi_uint32_array: return "Uint32Array";
    case napi_float32_array: return "Float32Array";
    case napi_float64_array: return "Float64Array";
    case napi_bigint64_array: return "BigInt64Array";
    case napi_biguint64_array: return "BigUint64Array";
    default: break;  // a type newer than this list (Float16Array)
  }
  return "TypedArray";
}

// "a Float32Array", "an Int32Array".
std::string a_typed_array(napi_typedarray_type t) {
  const char* name = typed_array_name(t);
  return std::string(name[0] == 'I' ? "an " : "a ") + name;
}

double number_of(const Napi::Value& v) { return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN; }
bool absent(const Napi::Value& v) { return v.IsUndefined() || v.IsNull(); }

// An integer field in [min, max], `expected` saying so in the message.
int64_t integer(const Fields& f, const char* key, int64_t min, int64_t max, const char* code, const char* max_text) {
  Napi::Value v = f.get(key);
  const double d = number_of(v);
  if (!(d >= static_cast<double>(min) && d <= static_cast<double>(max) && std::floor(d) == d))
    fail(code, f.what, key, "an integer in [" + std::to_string(min) + ", " + max_text + "]", describe(v));
  return static_cast<int64_t>(d);
}

// A typed array of type `type` and at least `need` elements.
template <class T>
T* typed(const Fields& f, const Napi::Value& v, const std::string& name, napi_typedarray_type type, int64_t need) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
    fail("ERR_DTYPE", f.what, name, a_typed_array(type), describe(v));
  Napi::TypedArrayOf<T> a = v.As<Napi::TypedArrayOf<T>>();
  if (static_cast<int64_t>(a.ElementLength()) < need)
    fail("ERR_SHAPE", f.what, name, a_typed_array(type) + " of at least " + std::to_string(need) + " elements",
         describe(v));
  if (f.keep != nullptr) f.keep->push_back(v);
  return a.Data();
}

template <class T>
T* typed_field(const Fields& f, const char* key, napi_typedarray_type type, int64_t need, bool optional) {
  Napi::Value v = f.get(key);
  if (optional && absent(v)) return nullptr;
  return typed<T>(f, v, key, type, need);
}

}  // namespace

std::string describe(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsNumber()) return "number " + js_number(v.As<Napi::Number>().DoubleValue());
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? "boolean true" : "boolean false";
  if (v.IsString()) {
    std::string s = v.As<Napi::String>().Utf8Value();
    if (s.size() > 40) s = s.substr(0, 40) + "…";
    return "string \"" + s + "\"";
  }
  if (v.IsTypedArray()) {
    Napi::TypedArray a = v.As<Napi::TypedArray>();
    return std::string(typed_array_name(a.TypedArrayType())) + "(" + std::to_string(a.ElementLength()) + ")";
  }
  if (v.IsArray()) return "Array(" + std::to_string(v.As<Napi::Array>().Length()) + ")";
  if (v.IsFunction()) return "function";
  return "object";
}

void fail(const char* code, const std::string& what, const std::string& key, const std::string& expected,
          const std::string& received) {
  throw Failure{code, what + ": expected " + expected + " for " + key + " but received " + received};
}

bool Fields::has(const char* key) const { return !absent(get(key)); }

int64_t Fields::dim(const char* key, int64_t min) const { return integer(*this, key, min, kMaxDim, "ERR_SHAPE", "2^31 - 1"); }

int64_t Fields::dim_or(const char* key, int64_t fallback, int64_t min) const {
  return has(key) ? dim(key, min) : fallback;
}

int64_t Fields::count(const char* key, int64_t min) const { return integer(*this, key, min, kMaxElems, "ERR_SHAPE", "2^53"); }

int64_t Fields::count_or(const char* key, int64_t fallback, int64_t min) const {
  return has(key) ? count(key, min) : fallback;
}

uint64_t Fields::seed(const char* key, int64_t min) const {
  return static_cast<uint64_t>(integer(*this, key, min, kMaxElems, "ERR_ARGUMENT", "2^53"));
}

double Fields::number(const char* key) const {
  Napi::Value v = get(key);
  const double d = number_of(v);
  if (!std::isfinite(d)) fail("ERR_ARGUMENT", what, key, "a finite number", describe(v));
  return d;
}

double Fields::number_or(const char* key, double fallback) const { return has(key) ? number(key) : fallback; }

double Fields::number_in(const char* key, double lo, double hi, bool lo_open) const {
  Napi::Value v = get(key);
  const double d = number_of(v);
  if (!std::isfinite(d) || !(lo_open ? d > lo : d >= lo) || !(d < hi))
    fail("ERR_ARGUMENT", what, key, std::string("a number in ") + (lo_open ? "(" : "[") + js_number(lo) + ", " + js_number(hi) + ")",
         describe(v));
  return d;
}

double Fields::any_number_or(const char* key, double fallback) const {
  Napi::Value v = get(key);
  if (absent(v)) return fallback;
  if (!v.IsNumber()) fail("ERR_ARGUMENT", what, key, "a number", describe(v));
  return v.As<Napi::Number>().DoubleValue();
}

bool Fields::boolean(const char* key, bool fallback) const {
  Napi::Value v = get(key);
  if (absent(v)) return fallback;
  if (!v.IsBoolean()) fail("ERR_ARGUMENT", what, key, "a boolean", describe(v));
  return v.As<Napi::Boolean>().Value();
}

std::string Fields::string(const char* key, const std::string& fallback) const {
  Napi::Value v = get(key);
  if (absent(v)) return fallback;
  if (!v.IsString()) fail("ERR_ARGUMENT", what, key, "a string", describe(v));
  return v.As<Napi::String>().Utf8Value();
}

int Fields::choice(const char* key, std::initializer_list<const char*> options, int fallback, const char* code) const {
  Napi::Value v = get(key);
  if (fallback >= 0 && absent(v)) return fallback;
  const std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : std::string();
  int i = 0;
  std::string expected;
  for (const char* o : options) {
    if (v.IsString() && s == o) return i;
    expected += (i == 0 ? "'" : i + 1 == static_cast<int>(options.size()) ? " or '" : ", '") + std::string(o) + "'";
    ++i;
  }
  fail(code, what, key, expected, describe(v));
}

float* Fields::floats(const char* key, int64_t need, bool optional) const {
  return typed_field<float>(*this, key, napi_float32_array, need, optional);
}

uint8_t* Fields::bytes(const char* key, int64_t need, bool optional) const {
  return typed_field<uint8_t>(*this, key, napi_uint8_array, need, optional);
}

int32_t* Fields::ints(const char* key, int64_t need, bool optional) const {
  return typed_field<int32_t>(*this, key, napi_int32_array, need, optional);
}

uint16_t* Fields::halves(const char* key, int64_t need, bool optional) const {
  return typed_field<uint16_t>(*this, key, napi_uint16_array, need, optional);
}
int8_t* Fields::int8s(const char* key, int64_t need, bool optional) const {
  return typed_field<int8_t>(*this, key, napi_int8_array, need, optional);
}
float* Fields::floats_of(const Napi::Value& v, const std::string& name, int64_t need) const {
  return typed<float>(*this, v, name, napi_float32_array, need);
}

int64_t product(int64_t a, int64_t b, const std::string& what) {
  if (a != 0 && b > kMaxElems / a)
    throw Failure{"ERR_SHAPE", what + ": expected at most 2^53 elements but received a shape of " + std::to_string(a) + " x " +
                                   std::to_string(b)};
  return a * b;
}

}  // namespace fused_lora::napi
