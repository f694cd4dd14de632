// AdamW on the fp32 masters of A and B: elementwise and memory-bound (reads p, g, m, v; writes p,
// m, v), so one grid-stride pass with the bias corrections computed once on the host.
#include <cmath>

#include "common.cuh"

namespace fused_lora::cuda {
namespace {

__global__ void adamw_kernel(int64_t n, float* p, const float* g, float* m, float* v, float lr, float b1, float b2,
                             float eps, float wd, float bc1, float bc2) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float gi = g[i];
    float mi = b1 * m[i] + (1.f - b1) * gi;
    float vi = b2 * v[i] + (1.f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float pi = p[i] * (1.f - lr * wd);  // decoupled weight decay (Loshchilov & Hutter), as PyTorch's AdamW
    p[i] = pi - lr * (mi / bc1) / (sqrtf(vi / bc2) + eps);
  }
}

}  // namespace

Status adamw(int64_t n, float* param, const float* grad, float* m, float* v, float lr, float beta1, float beta2,
             float eps, float weight_decay, int64_t step, Stream s) {
  if (n < 0 || step < 1) return fail(Status::Argument, "adamw: expected n >= 0 and step >= 1");
  if (n == 0) return ok();
  float bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step)));
  float bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step)));
  adamw_kernel<<<blocks_for(n, 256), 256, 0, as_stream(s)>>>(n, param, grad, m, v, lr, beta1, beta2, eps,
                                                             weight_decay, bc1, bc2);
  return check_launch("adamw_kernel");
}

}  // namespace fused_lora::cuda
