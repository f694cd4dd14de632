// y = alpha·x + beta·y over a 2-D region: PEFT's "multiply the (M, O) result by scaling" and "add"
// passes of the unfused path. Deliberately its own pass over (M, O): that is the cost the fused
// path removes, and the unfused benchmark must pay it.
#include "common.cuh"

namespace fused_lora::cuda {
namespace {

template <typename T>
__global__ void axpby_kernel(int64_t rows, int64_t cols, float alpha, const T* x, int64_t ldx, float beta, T* y,
                             int64_t ldy) {
  int64_t n = rows * cols;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = e / cols, c = e % cols;
    float xv = ld_f(x + r * ldx + c);
    // beta == 0 overwrites y without reading it, so NaN there does not propagate.
    float v = beta == 0.f ? alpha * xv : alpha * xv + beta * ld_f(y + r * ldy + c);
    st_f(y + r * ldy + c, v);
  }
}

}  // namespace

Status axpby(DType t, int64_t rows, int64_t cols, float alpha, const void* x, int64_t ldx, float beta, void* y,
             int64_t ldy, Stream s) {
  if (rows < 0 || cols < 0 || ldx < cols || ldy < cols) return fail(Status::Argument, "axpby: bad shape");
  if (rows == 0 || cols == 0) return ok();
  return dispatch(t, [&](auto tv) {
    using T = decltype(tv);
    axpby_kernel<T><<<blocks_for(rows * cols, 256), 256, 0, as_stream(s)>>>(
        rows, cols, alpha, static_cast<const T*>(x), ldx, beta, static_cast<T*>(y), ldy);
    return check_launch("axpby_kernel");
  });
}

}  // namespace fused_lora::cuda
