// Losses with their gradients, fused in one pass each. MSE is elementwise plus one reduction
// (block sums, then one fp32 atomic per block). Cross-entropy needs a row's max and sum of
// exponentials before its gradient, so one block owns one row and does three passes over it
// (max, sum, write), each a block-wide reduction through shared memory.
#include "common.cuh"

namespace fused_lora::cuda {
namespace {

__device__ float block_sum(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = lane < nw ? red[lane] : 0.f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ float block_max(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = lane < nw ? red[lane] : -INFINITY;
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

template <typename T>
__global__ void __launch_bounds__(256) mse_kernel(int64_t n, const T* pred, const T* target, float* loss, T* dpred) {
  __shared__ float red[32];
  float acc = 0.f;
  const float inv_n = 1.f / static_cast<float>(n);
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float d = ld_f(pred + i) - ld_f(target + i);
    acc += d * d;
    if (dpred) st_f(dpred + i, 2.f * d * inv_n);
  }
  acc = block_sum(acc, red);
  if (threadIdx.x == 0) atomicAdd(loss, acc * inv_n);
}

template <typename T>
__global__ void __launch_bounds__(256) cross_entropy_kernel(int64_t N, int64_t C, const T* logits, int64_t ld,
                                                            const int32_t* labels, float* loss, T* dlogits,
                                                            int64_t ld_d) {
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  const T* x = logits + row * ld;
  float mx = -INFINITY;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) mx = fmaxf(mx, ld_f(x + c));
  mx = block_max(mx, red);
  float se = 0.f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) se += __expf(ld_f(x + c) - mx);
  se = block_sum(se, red);
  const int32_t label = labels[row];
  const bool valid = label >= 0 && label < C;
  const float inv_n = 1.f / static_cast<float>(N);
  if (dlogits)
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      float p = __expf(ld_f(x + c) - mx) / se;
      st_f(dlogits + row * ld_d + c, valid ? (p - (c == label ? 1.f : 0.f)) * inv_n : NAN);
    }
  if (threadIdx.x == 0) {
    float l = valid ? (logf(se) + mx - ld_f(x + label)) : NAN;
    atomicAdd(loss, l * inv_n);
  }
}

}  // namespace

Status mse_loss(DType t, int64_t n, const void* pred, const void* target, float* loss, void* dpred, Stream s) {
  if (n < 1) return fail(Status::Argument, "mse_loss: expected n >= 1");
  cudaStream_t cs = as_stream(s);
  if (Status st = check(cudaMemsetAsync(loss, 0, sizeof(float), cs), "mse_loss: memset"); st != Status::Ok) return st;
  return dispatch(t, [&](auto tv) {
    using T = decltype(tv);
    mse_kernel<T><<<blocks_for(n, 256, 1024), 256, 0, cs>>>(n, static_cast<const T*>(pred),
                                                            static_cast<const T*>(target), loss, static_cast<T*>(dpred));
    return check_launch("mse_kernel");
  });
}

Status cross_entropy_loss(DType t, int64_t N, int64_t C, const void* logits, int64_t ld, const int32_t* labels,
                          float* loss, void* dlogits, int64_t ld_d, Stream s) {
  if (N < 1 || C < 1 || ld < C || (dlogits && ld_d < C) || N > 2147483647LL)
    return fail(Status::Argument, "cross_entropy_loss: expected N, C >= 1 and leading dimensions >= C");
  cudaStream_t cs = as_stream(s);
  if (Status st = check(cudaMemsetAsync(loss, 0, sizeof(float), cs), "cross_entropy_loss: memset"); st != Status::Ok)
    return st;
  return dispatch(t, [&](auto tv) {
    using T = decltype(tv);
    cross_entropy_kernel<T><<<static_cast<unsigned>(N), 256, 0, cs>>>(
        N, C, static_cast<const T*>(logits), ld, labels, loss, static_cast<T*>(dlogits), ld_d);
    return check_launch("cross_entropy_kernel");
  });
}

}  // namespace fused_lora::cuda
