// The boundary of an export: its options object read, its body run, and every failure on the way
// (a refused argument, a kernel's failure, a failed allocation) turned into a LoraError naming the
// export. Every export of both addons that takes an options object goes through call().
#pragma once
#include <napi.h>

#include <initializer_list>
#include <new>
#include <string>
#include <vector>

#include "napi/env.h"
#include "napi/fields.h"

namespace fused_lora::napi {

// The first argument as an object, or a LoraError saying what came instead.
inline Napi::Object options(const Napi::CallbackInfo& info, const char* what) {
  Napi::Value v = info.Length() > 0 ? info[0] : info.Env().Undefined();
  if (!v.IsObject() || v.IsArray())
    throw make_error(info.Env(), "ERR_ARGUMENT", std::string(what) + ": expected an options object for args but received " + describe(v));
  return v.As<Napi::Object>();
}

// body(env, reader) with reader = Reader{Fields{options, what, keep}} (Fields itself, or a reader
// built on it), returning the export's value.
template <class Reader = Fields, class Body>
Napi::Value call(const Napi::CallbackInfo& info, const char* what, const Body& body, std::vector<Napi::Value>* keep = nullptr) {
  Napi::Env env = info.Env();
  const Napi::Object args = options(info, what);
  try {
    return body(env, Reader{Fields{args, what, keep}});
  } catch (const Failure& f) {
    throw make_error(env, f);
  } catch (const std::bad_alloc&) {
    throw make_error(env, "ERR_BACKEND", std::string(what) + ": out of memory");
  }
}

// An exported function: its name and its callback.
struct Export {
  const char* name;
  Napi::Function::Callback fn;
};

// exports[name] = a function running fn, for each of `list`.
inline void add_functions(Napi::Env env, Napi::Object exports, std::initializer_list<Export> list) {
  for (const Export& e : list) exports.Set(e.name, Napi::Function::New(env, e.fn, e.name));
}

}  // namespace fused_lora::napi
