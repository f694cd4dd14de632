// Dropout on the LoRA path. The mask is a counter-based hash of (seed, step, element), so it needs
// no generator state, parallelises without coordination, and is reproducible from the seed.
#include <cmath>

#include "fused_lora/lora.h"
#include "fused_lora/threads.h"

namespace fused_lora {
namespace {

inline uint64_t mix64(uint64_t z) {  // splitmix64's finaliser
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

void dropout_forward(const float* x, int64_t n, const Dropout& d) {
  const uint64_t key = mix64(d.seed ^ mix64(d.step + 0x9E3779B97F4A7C15ull));
  // Keep element e when its 32-bit draw is >= p·2^32, so P(keep) = 1 − p up to 2^-32.
  const uint64_t threshold = static_cast<uint64_t>(std::ldexp(static_cast<double>(d.p), 32));
  const float inv_keep = 1.0f / (1.0f - d.p);
  parallel_for(n, 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
      const uint8_t keep = (mix64(key + static_cast<uint64_t>(e) * 0x9E3779B97F4A7C15ull) >> 32) >= threshold;
      d.mask[e] = keep;
      d.x_drop[e] = keep ? x[e] * inv_keep : 0.0f;
    }
  });
}

}  // namespace fused_lora
