// merge / unmerge: W ± scaling·(A·B)ᵀ. Two passes (check, then write) instead of a temporary of
// W's size: merging is rare, memory is not, and a refused merge must leave W exactly as it was.
#include <algorithm>
#include <cmath>
#include <vector>

#include "fused_lora/lora.h"
#include "fused_lora/threads.h"

namespace fused_lora {
namespace {

// Row o of the update: delta[i] = Σ_k (sign·scaling·B[k, o]) · At[k, i], k in a fixed order so the
// same inputs give the same bits whatever the thread count.
inline void delta_row(const float* At, const float* B, int64_t I, int64_t O, int64_t r, int64_t o, float coef_scale,
                      float* delta) {
  for (int64_t i = 0; i < I; ++i) delta[i] = 0.0f;
  for (int64_t k = 0; k < r; ++k) {
    const float c = coef_scale * B[k * O + o];
    const float* a = At + k * I;
    for (int64_t i = 0; i < I; ++i) delta[i] += c * a[i];
  }
}

}  // namespace

bool lora_merge(float* W, const float* A, const float* B, int64_t I, int64_t O, int64_t r, float scaling, float sign) {
  std::vector<float> At(static_cast<size_t>(r * I));  // Aᵀ (r, I): unit stride along i
  for (int64_t i = 0; i < I; ++i)
    for (int64_t k = 0; k < r; ++k) At[k * I + i] = A[i * r + k];
  const float coef_scale = sign * scaling;
  const int64_t grain = std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(I * r, 1));
  bool finite = true;
  std::vector<char> row_ok(static_cast<size_t>(O), 1);
  parallel_for(O, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> delta(static_cast<size_t>(I));
    for (int64_t o = begin; o < end; ++o) {
      delta_row(At.data(), B, I, O, r, o, coef_scale, delta.data());
      const float* w = W + o * I;
      for (int64_t i = 0; i < I; ++i)
        if (!std::isfinite(w[i] + delta[i])) {
          row_ok[o] = 0;
          break;
        }
    }
  });
  for (int64_t o = 0; o < O; ++o) finite = finite && row_ok[o];
  if (!finite) return false;
  parallel_for(O, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> delta(static_cast<size_t>(I));
    for (int64_t o = begin; o < end; ++o) {
      delta_row(At.data(), B, I, O, r, o, coef_scale, delta.data());
      float* w = W + o * I;
      for (int64_t i = 0; i < I; ++i) w[i] += delta[i];
    }
  });
  return true;
}

}  // namespace fused_lora
