// The tensor-core GEMM: C = alpha·A·op(B) + bias + beta·C, fp32 accumulation.
// Why this shape: a 128 × 128 block tile with 8 warps of 64 × 32 keeps 64 fp32 accumulators per
// thread (no spills at 256 threads) and gives each warp 4 × 4 mma tiles per k-step, enough to hide
// ldmatrix latency. K tiles of 64 bytes per row (32 bf16/fp16, 16 fp32) let one loader serve every
// dtype: 512 chunks of 16 bytes per operand tile, two per thread, copied with cp.async in a 3-stage
// ring so two tiles are in flight while the third is multiplied. Every chunk is predicated
// (zero-filled past M, N, K), so any shape works; rows that are not 16-byte aligned (odd leading
// dimensions) take the element-load variant of the same loader. B comes in either layout: (N, K)
// via ldmatrix, (K, N) via ldmatrix.trans, so the forward (x·Wᵀ) and dx (dy·W) read W_ext in place.
// fp32 inputs go through TF32 mma (m16n8k8, round-to-nearest conversion) or, in the exact mode,
// through FFMA on the same tiles and pipeline.
#include <mutex>

#include "common.cuh"
#include "mma_ptx.cuh"
#include "tile_math.h"

namespace fused_lora::cuda {
namespace {

namespace tl = tiles;

struct Params {
  int M, N, K;
  float alpha, beta;
  const void* A; int64_t lda;
  const void* B; int64_t ldb;
  const void* bias;
  void* C; int64_t ldc;
};

template <typename T, bool kNN>
struct Layout {
  static constexpr int EB = sizeof(T);
  static constexpr int BK = tl::tile_k(EB);
  static constexpr int LDA = tl::smem_ld_kmajor(EB);
  static constexpr int LDB = kNN ? tl::smem_ld_nmajor(EB) : tl::smem_ld_kmajor(EB);
  static constexpr int A_ELEMS = tl::smem_a_elems(EB);
  static constexpr int B_ELEMS = tl::smem_b_elems(EB, kNN);
  static constexpr int SMEM = tl::smem_bytes(EB, kNN);
};

// One predicated 16-byte chunk: cp.async with zero-fill, or element loads where rows are unaligned.
template <typename T, bool kAligned>
__device__ __forceinline__ void load_chunk(T* dst, const T* base, int64_t ld, int64_t row, int64_t rows, int64_t col,
                                           int64_t cols) {
  constexpr int EPC = tl::elems_per_chunk(sizeof(T));
  if constexpr (kAligned) {
    int bytes = tl::chunk_src_bytes(row, rows, col, cols, sizeof(T));
    const T* src = bytes > 0 ? base + row * ld + col : base;
    ptx::cp_async_16(dst, src, bytes);
  } else {
    int valid = row < rows ? tl::chunk_valid(col, cols, EPC) : 0;
#pragma unroll
    for (int e = 0; e < EPC; ++e) dst[e] = e < valid ? base[row * ld + col + e] : T(0.f);
  }
}

template <typename T, bool kNN, bool kAligned>
__device__ __forceinline__ void load_stage(const Params& p, T* As, T* Bs, int64_t m0, int64_t n0, int64_t k0) {
  using L = Layout<T, kNN>;
  const T* A = static_cast<const T*>(p.A);
  const T* B = static_cast<const T*>(p.B);
#pragma unroll
  for (int it = 0; it < tl::kChunksPerThread; ++it) {
    tl::Chunk c = tl::kmajor_chunk(threadIdx.x, it, L::EB);
    load_chunk<T, kAligned>(As + c.row * L::LDA + c.col, A, p.lda, m0 + c.row, p.M, k0 + c.col, p.K);
  }
#pragma unroll
  for (int it = 0; it < tl::kChunksPerThread; ++it) {
    if constexpr (kNN) {
      tl::Chunk c = tl::nmajor_chunk(threadIdx.x, it, L::EB);
      load_chunk<T, kAligned>(Bs + c.row * L::LDB + c.col, B, p.ldb, k0 + c.row, p.K, n0 + c.col, p.N);
    } else {
      tl::Chunk c = tl::kmajor_chunk(threadIdx.x, it, L::EB);
      load_chunk<T, kAligned>(Bs + c.row * L::LDB + c.col, B, p.ldb, n0 + c.row, p.N, k0 + c.col, p.K);
    }
  }
}

// Writes one output element: alpha·acc + bias + beta·C (C not read when beta == 0).
template <typename T>
__device__ __forceinline__ void store_out(const Params& p, int64_t row, int64_t col, float acc) {
  if (row >= p.M || col >= p.N) return;
  float v = p.alpha * acc;
  if (p.bias) v += ld_f(static_cast<const T*>(p.bias) + col);
  T* c = static_cast<T*>(p.C) + row * p.ldc + col;
  if (p.beta != 0.f) v += p.beta * ld_f(c);
  st_f(c, v);
}

// 16-bit inputs: ldmatrix + mma.m16n8k16. acc[mi][ni][4]: 4 m16 tiles × 4 n8 tiles per warp.
template <typename T, bool kNN>
__device__ __forceinline__ void compute_stage_16(const T* As, const T* Bs, int wm, int wn, int lane,
                                                 float (&acc)[4][4][4]) {
  using L = Layout<T, kNN>;
#pragma unroll
  for (int ks = 0; ks < L::BK / 16; ++ks) {
    uint32_t a[4][4], b[4][2];
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
      ptx::ldmatrix_x4(a[mi], As + (wm + mi * 16 + tl::ldm_a_row(lane)) * L::LDA + ks * 16 + tl::ldm_a_col(lane));
#pragma unroll
    for (int nj = 0; nj < 2; ++nj) {
      uint32_t r[4];
      if constexpr (kNN)
        ptx::ldmatrix_x4_trans(r, Bs + (ks * 16 + tl::ldm_bnn_k(lane)) * L::LDB + wn + nj * 16 + tl::ldm_bnn_n(lane));
      else
        ptx::ldmatrix_x4(r, Bs + (wn + nj * 16 + tl::ldm_bnt_n(lane)) * L::LDB + ks * 16 + tl::ldm_bnt_k(lane));
      b[2 * nj][0] = r[0]; b[2 * nj][1] = r[1]; b[2 * nj + 1][0] = r[2]; b[2 * nj + 1][1] = r[3];
    }
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) ptx::Mma16<T>::run(acc[mi][ni], a[mi], b[ni][0], b[ni][1]);
  }
}

// fp32 inputs through TF32: fragments read element by element (ldmatrix moves 16-bit pairs, and
// the padded strides keep these loads conflict-free), converted with round-to-nearest.
template <bool kNN>
__device__ __forceinline__ void compute_stage_tf32(const float* As, const float* Bs, int wm, int wn, int lane,
                                                   float (&acc)[4][4][4]) {
  using L = Layout<float, kNN>;
#pragma unroll
  for (int ks = 0; ks < L::BK / 8; ++ks) {
    uint32_t a[4][4], b[4][2];
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
      for (int reg = 0; reg < 4; ++reg)
        a[mi][reg] = ptx::to_tf32(
            As[(wm + mi * 16 + tl::frag32_a_row(lane, reg)) * L::LDA + ks * 8 + tl::frag32_a_col(lane, reg)]);
#pragma unroll
    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
      for (int reg = 0; reg < 2; ++reg) {
        int k = ks * 8 + tl::frag32_b_k(lane, reg), n = wn + ni * 8 + tl::frag32_b_n(lane);
        b[ni][reg] = ptx::to_tf32(kNN ? Bs[k * L::LDB + n] : Bs[n * L::LDB + k]);
      }
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) ptx::mma_tf32(acc[mi][ni], a[mi], b[ni][0], b[ni][1]);
  }
}

// Exact fp32: each lane owns a 16 × 4 sub-tile of the warp's 64 × 32 and runs FFMA over the tile's k.
template <bool kNN>
__device__ __forceinline__ void compute_stage_ffma(const float* As, const float* Bs, int wm, int wn, int lane,
                                                   float (&acc)[16][4][1]) {
  using L = Layout<float, kNN>;
#pragma unroll 4
  for (int k = 0; k < L::BK; ++k) {
    float a[16], b[4];
#pragma unroll
    for (int i = 0; i < 16; ++i) a[i] = As[(wm + tl::ffma_row(lane, i)) * L::LDA + k];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      int n = wn + tl::ffma_col(lane, j);
      b[j] = kNN ? Bs[k * L::LDB + n] : Bs[n * L::LDB + k];
    }
#pragma unroll
    for (int i = 0; i < 16; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j][0] = fmaf(a[i], b[j], acc[i][j][0]);
  }
}

// Two blocks per SM (≤ 128 registers) for the 16-bit cp.async variants, the fast path. The
// element-load fallback for unaligned rows, and the fp32 variants (TF32 fragments are loaded and
// converted element by element), spilled on sm_80 under that cap, so they ask for one block.
template <typename T, bool kNN, bool kAligned, bool kExact>
__global__ void __launch_bounds__(tl::kThreads, (kAligned && sizeof(T) == 2) ? 2 : 1) gemm_kernel(Params p) {
  using L = Layout<T, kNN>;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* As = reinterpret_cast<T*>(smem_raw);
  T* Bs = As + tl::kStages * L::A_ELEMS;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = tl::warp_row0(warp), wn = tl::warp_col0(warp);
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * tl::kBM, n0 = static_cast<int64_t>(blockIdx.x) * tl::kBN;
  const int KT = static_cast<int>(tl::k_tiles(p.K, L::EB));

  constexpr bool kFfma = kExact;  // only instantiated with float
  float acc[kFfma ? 16 : 4][4][kFfma ? 1 : 4];
#pragma unroll
  for (int i = 0; i < (kFfma ? 16 : 4); ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < (kFfma ? 1 : 4); ++e) acc[i][j][e] = 0.f;

#pragma unroll
  for (int s = 0; s < tl::kStages - 1; ++s) {
    if (s < KT) load_stage<T, kNN, kAligned>(p, As + s * L::A_ELEMS, Bs + s * L::B_ELEMS, m0, n0, int64_t(s) * L::BK);
    ptx::cp_async_commit();
  }
  for (int kt = 0; kt < KT; ++kt) {
    ptx::cp_async_wait<tl::kStages - 2>();
    __syncthreads();  // tile kt is in shared memory, and every warp is done with the stage refilled next
    const int nk = kt + tl::kStages - 1;
    if (nk < KT) {
      const int st = nk % tl::kStages;
      load_stage<T, kNN, kAligned>(p, As + st * L::A_ELEMS, Bs + st * L::B_ELEMS, m0, n0, int64_t(nk) * L::BK);
    }
    ptx::cp_async_commit();
    const int cs = kt % tl::kStages;
    const T* a_s = As + cs * L::A_ELEMS;
    const T* b_s = Bs + cs * L::B_ELEMS;
    if constexpr (kFfma) {
      compute_stage_ffma<kNN>(a_s, b_s, wm, wn, lane, acc);
    } else if constexpr (sizeof(T) == 4) {
      compute_stage_tf32<kNN>(a_s, b_s, wm, wn, lane, acc);
    } else {
      compute_stage_16<T, kNN>(a_s, b_s, wm, wn, lane, acc);
    }
  }
  ptx::cp_async_wait<0>();

  if constexpr (kFfma) {
#pragma unroll
    for (int i = 0; i < 16; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j)
        store_out<T>(p, m0 + wm + tl::ffma_row(lane, i), n0 + wn + tl::ffma_col(lane, j), acc[i][j][0]);
  } else {
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
      for (int ni = 0; ni < 4; ++ni)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          store_out<T>(p, m0 + wm + mi * 16 + tl::acc_row(lane, e), n0 + wn + ni * 8 + tl::acc_col(lane, e),
                       acc[mi][ni][e]);
  }
}

template <typename T, bool kNN, bool kAligned, bool kExact>
Status launch(const Params& p, cudaStream_t s) {
  using L = Layout<T, kNN>;
  auto kernel = gemm_kernel<T, kNN, kAligned, kExact>;
  static std::once_flag once;
  static cudaError_t attr = cudaSuccess;
  std::call_once(once, [&] {
    attr = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, L::SMEM);
  });
  if (attr != cudaSuccess) return check(attr, "gemm: cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
  tl::Grid g = tl::gemm_grid(p.M, p.N);
  if (g.y > 65535) return fail(Status::Argument, "gemm: M too large for one launch (more than 65535 row tiles)");
  kernel<<<dim3(static_cast<unsigned>(g.x), static_cast<unsigned>(g.y)), tl::kThreads, L::SMEM, s>>>(p);
  return check_launch("gemm_kernel");
}

template <typename T, bool kExact>
Status launch_layouts(const Params& p, bool nn, bool aligned, cudaStream_t s) {
  if (nn) return aligned ? launch<T, true, true, kExact>(p, s) : launch<T, true, false, kExact>(p, s);
  return aligned ? launch<T, false, true, kExact>(p, s) : launch<T, false, false, kExact>(p, s);
}

}  // namespace

Status gemm(const GemmArgs& g, Stream s) {
  const bool nn = g.b_layout == BLayout::NN;
  if (g.M < 1 || g.N < 1 || g.K < 1 || g.M > INT32_MAX || g.N > INT32_MAX || g.K > INT32_MAX)
    return fail(Status::Argument, "gemm: expected 1 <= M, N, K < 2^31");
  if (g.lda < g.K || g.ldb < (nn ? g.N : g.K) || g.ldc < g.N)
    return fail(Status::Argument, "gemm: a leading dimension is below its row width");
  if (!g.A || !g.B || !g.C) return fail(Status::Argument, "gemm: null operand");
  const int eb = static_cast<int>(dtype_size(g.t));
  const bool aligned = tl::rows_16b_aligned(reinterpret_cast<uint64_t>(g.A), g.lda, eb) &&
                       tl::rows_16b_aligned(reinterpret_cast<uint64_t>(g.B), g.ldb, eb);
  Params p{static_cast<int>(g.M), static_cast<int>(g.N), static_cast<int>(g.K), g.alpha, g.beta, g.A, g.lda, g.B,
           g.ldb, g.bias, g.C, g.ldc};
  cudaStream_t cs = as_stream(s);
  switch (g.t) {
    case DType::BF16: return launch_layouts<__nv_bfloat16, false>(p, nn, aligned, cs);
    case DType::F16: return launch_layouts<__half, false>(p, nn, aligned, cs);
    case DType::F32:
      return g.math == Math::ExactF32 ? launch_layouts<float, true>(p, nn, aligned, cs)
                                      : launch_layouts<float, false>(p, nn, aligned, cs);
  }
  return fail(Status::Argument, "gemm: unknown dtype");
}

}  // namespace fused_lora::cuda
