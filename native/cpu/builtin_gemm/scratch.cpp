#include "scratch.h"

#include <cstdint>
#include <vector>

namespace fused_lora {
namespace builtin {
namespace {

class Scratch {
 public:
  // 64-byte aligned: packed slivers are read with aligned full-cache-line vector loads.
  float* get(size_t n) {
    if (buf_.size() < n + 16) buf_.resize(n + 16);
    uintptr_t p = reinterpret_cast<uintptr_t>(buf_.data());
    return reinterpret_cast<float*>((p + 63) & ~uintptr_t(63));
  }

 private:
  std::vector<float> buf_;
};

thread_local Scratch tl_pack_a, tl_pack_b, tl_vec;

}  // namespace

float* scratch(Slot slot, size_t n) {
  switch (slot) {
    case Slot::PackA: return tl_pack_a.get(n);
    case Slot::PackB: return tl_pack_b.get(n);
    case Slot::Vec: break;
  }
  return tl_vec.get(n);
}

}  // namespace builtin
}  // namespace fused_lora
