// The index arithmetic of the CUDA kernels: tile counts, the loaders' chunk assignment and
// predicates, the shared-memory layouts, the mma.sync fragment coordinates and the W_ext / x_ext
// offsets. Plain __host__ __device__ functions with no CUDA types, so test/cuda-host.test.ts
// compiles them with g++ and checks them on the CPU (native/cuda/test/tile_math_test.cpp).
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define FL_HD __host__ __device__ __forceinline__
#else
#define FL_HD inline
#endif

namespace fused_lora::cuda::tiles {

// ---- generic -------------------------------------------------------------------------------------
FL_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
FL_HD int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// The rank padding: r rounded up to the GEMM's K step (16 = mma.m16n8k16's K for 16-bit types,
// two k-steps of the TF32 m16n8k8). Keeps x_ext/dy_ext rows 16-byte aligned when I (O) is a
// multiple of 8, so the GEMM keeps its 16-byte cp.async path.
constexpr int64_t kRankStep = 16;
FL_HD int64_t rank_pad(int64_t r) { return round_up(r, kRankStep); }

// ---- W_ext and the extended inputs (docs/ARCHITECTURE.md, "Layouts and the math") --------------
FL_HD int64_t ext_ld(int64_t width, int64_t r) { return width + rank_pad(r); }
// W_ext ((O + r_pad), (I + r_pad)), leading dimension I + r_pad.
FL_HD int64_t w_ext_rows(int64_t O, int64_t r) { return O + rank_pad(r); }
FL_HD int64_t w_ext_elems(int64_t I, int64_t O, int64_t r) { return w_ext_rows(O, r) * ext_ld(I, r); }
FL_HD int64_t w_ext_W(int64_t I, int64_t r, int64_t o, int64_t i) { return o * ext_ld(I, r) + i; }
// scaling·B[j][o] lives at row o, column I + j.
FL_HD int64_t w_ext_Bt(int64_t I, int64_t r, int64_t o, int64_t j) { return o * ext_ld(I, r) + I + j; }
// A[i][j] lives at row O + j, column i.
FL_HD int64_t w_ext_At(int64_t I, int64_t O, int64_t r, int64_t j, int64_t i) { return (O + j) * ext_ld(I, r) + i; }
// s[m][j] in x_ext (and ds[m][j] in dy_ext) lives at row m, column width + j.
FL_HD int64_t ext_pad(int64_t width, int64_t ld, int64_t m, int64_t j) { return m * ld + width + j; }

// The whole layout of a layer (I, O, r): W_ext is (rows, ldx), x_ext (M, ldx), dy_ext (M, ldy). The
// addon reports it (wExtLayout) and sizes and checks every extended buffer from it.
struct ExtLayout {
  int64_t r_pad, ldx, ldy, rows, elements;
};
FL_HD ExtLayout ext_layout(int64_t I, int64_t O, int64_t r) {
  return ExtLayout{rank_pad(r), ext_ld(I, r), ext_ld(O, r), w_ext_rows(O, r), w_ext_elems(I, O, r)};
}

// ---- the tensor-core GEMM's tiles ----------------------------------------------------------------
// Block tile 128 × 128, 8 warps as 2 (M) × 4 (N), warp tile 64 × 32. K tile: 64 bytes per row
// (32 bf16/fp16 or 16 fp32), i.e. 4 chunks of 16 bytes, so both element sizes share the loaders.
constexpr int kBM = 128, kBN = 128, kThreads = 256, kWarpsM = 2, kWarpsN = 4, kWM = 64, kWN = 32;
constexpr int kStages = 3;
constexpr int kChunkBytes = 16;
constexpr int kRowBytes = 64;  // of a K tile
FL_HD constexpr int elems_per_chunk(int elem_bytes) { return kChunkBytes / elem_bytes; }
FL_HD constexpr int tile_k(int elem_bytes) { return kRowBytes / elem_bytes; }  // BK: 32 or 16

struct Grid { int64_t x, y; };
// blockIdx.x over N tiles, blockIdx.y over M tiles.
FL_HD Grid gemm_grid(int64_t M, int64_t N) { return Grid{ceil_div(N, kBN), ceil_div(M, kBM)}; }
FL_HD int64_t k_tiles(int64_t K, int elem_bytes) { return ceil_div(K, tile_k(elem_bytes)); }

// Shared-memory row strides (elements), padded so that the 8 row addresses of an ldmatrix (or the
// 8 × 4 elements of a TF32 fragment load) fall in distinct banks: K-major rows (64 bytes) get one
// 16-byte chunk more (80-byte stride); N-major rows get 8 elements more (272 bytes for 16-bit: an
// odd multiple of 16 bytes mod 128; 544 bytes for fp32: k·8 + n covers all 32 banks).
FL_HD constexpr int smem_ld_kmajor(int elem_bytes) { return tile_k(elem_bytes) + elems_per_chunk(elem_bytes); }
FL_HD constexpr int smem_ld_nmajor(int elem_bytes) { return kBN + 8; }
// Elements of one stage's A tile (BM rows, K-major) and B tile (NT: BN rows K-major; NN: BK rows N-major).
FL_HD constexpr int smem_a_elems(int eb) { return kBM * smem_ld_kmajor(eb); }
FL_HD constexpr int smem_b_elems(int eb, bool nn) { return nn ? tile_k(eb) * smem_ld_nmajor(eb) : kBN * smem_ld_kmajor(eb); }
FL_HD constexpr int smem_bytes(int eb, bool nn) { return kStages * (smem_a_elems(eb) + smem_b_elems(eb, nn)) * eb; }

// The loaders: a K-major tile (128 rows × 4 chunks) or an N-major tile (BK rows × 128/E chunks) is
// 512 chunks of 16 bytes: each of the 256 threads copies chunks tid and tid + 256.
constexpr int kChunksPerTile = 512;
constexpr int kChunksPerThread = kChunksPerTile / kThreads;
struct Chunk { int row, col; };  // col in elements within the tile
FL_HD Chunk kmajor_chunk(int tid, int it, int elem_bytes) {
  int c = tid + it * kThreads;
  return Chunk{c / 4, (c % 4) * elems_per_chunk(elem_bytes)};
}
FL_HD Chunk nmajor_chunk(int tid, int it, int elem_bytes) {
  int per_row = kBN / elems_per_chunk(elem_bytes);  // 16 (16-bit) or 32 (fp32) chunks per row
  int c = tid + it * kThreads;
  return Chunk{c / per_row, (c % per_row) * elems_per_chunk(elem_bytes)};
}
// Rows an N-major tile has: BK (32 or 16); with fp32 only the first 16×32 = 512 chunks exist, and
// with 16-bit 32×16 = 512: both exactly one chunk pair per thread.
// How many elements of the chunk starting at global index `start` lie inside [0, limit): 0..E.
FL_HD int chunk_valid(int64_t start, int64_t limit, int elems) {
  int64_t v = limit - start;
  return v <= 0 ? 0 : (v >= elems ? elems : static_cast<int>(v));
}
// Bytes a predicated cp.async copies for a chunk at (row, k): 0 outside the matrix, the valid
// elements at the ragged K (or N) edge; the rest of the 16 bytes is zero-filled.
FL_HD int chunk_src_bytes(int64_t row, int64_t rows, int64_t k, int64_t K, int elem_bytes) {
  if (row >= rows) return 0;
  return chunk_valid(k, K, elems_per_chunk(elem_bytes)) * elem_bytes;
}
// The 16-byte path needs every chunk's global address 16-byte aligned.
FL_HD bool rows_16b_aligned(uint64_t base_addr, int64_t ld, int elem_bytes) {
  return (base_addr % 16 == 0) && ((ld * elem_bytes) % 16 == 0);
}

// ---- mma.sync fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16 / m16n8k8") ---------------
// The accumulator of m16n8 (fp32): c[idx] at row lane/4 (+8 for idx 2, 3), column 2·(lane%4) + idx%2.
FL_HD int acc_row(int lane, int idx) { return lane / 4 + (idx >= 2 ? 8 : 0); }
FL_HD int acc_col(int lane, int idx) { return 2 * (lane % 4) + (idx & 1); }
// m16n8k16 16-bit A fragment: register a[reg] holds two elements (half h = 0, 1).
FL_HD int frag16_a_row(int lane, int reg) { return lane / 4 + ((reg & 1) ? 8 : 0); }
FL_HD int frag16_a_col(int lane, int reg, int h) { return 2 * (lane % 4) + h + ((reg & 2) ? 8 : 0); }
// m16n8k16 16-bit B fragment (K × N): b[reg] holds (k, n) = (2·(lane%4) + h + 8·reg, lane/4).
FL_HD int frag16_b_k(int lane, int reg, int h) { return 2 * (lane % 4) + h + 8 * reg; }
FL_HD int frag16_b_n(int lane) { return lane / 4; }
// m16n8k8 TF32 A fragment: a[reg] at row lane/4 (+8 for reg 1, 3), column lane%4 (+4 for reg 2, 3).
FL_HD int frag32_a_row(int lane, int reg) { return lane / 4 + ((reg & 1) ? 8 : 0); }
FL_HD int frag32_a_col(int lane, int reg) { return lane % 4 + ((reg & 2) ? 4 : 0); }
// m16n8k8 TF32 B fragment: b[reg] at k = lane%4 + 4·reg, n = lane/4.
FL_HD int frag32_b_k(int lane, int reg) { return lane % 4 + 4 * reg; }
FL_HD int frag32_b_n(int lane) { return lane / 4; }

// ldmatrix.x4: lane l supplies the address of one 8-element row of one of four 8×8 matrices
// (matrix l/8, row l%8). Thread t then receives, from matrix q, the elements at row t/4, columns
// 2·(t%4) and +1 (with .trans: row and column swapped). These give the row/column (within a
// 16 × 16 block) each lane points at.
// A (16 × 16, K-major): matrices ordered a0..a3 = (rows 0-7, k 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15).
FL_HD int ldm_a_row(int lane) { return lane % 16; }
FL_HD int ldm_a_col(int lane) { return (lane / 16) * 8; }
// B stored (N, K) (NT), two n8 tiles: matrices = (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15),
// i.e. b0, b1 of n-tile 0 then b0, b1 of n-tile 1. Non-transposed ldmatrix.
FL_HD int ldm_bnt_n(int lane) { return lane % 8 + (lane / 16) * 8; }
FL_HD int ldm_bnt_k(int lane) { return ((lane / 8) % 2) * 8; }
// B stored (K, N) (NN), same matrix order, with ldmatrix.trans.
FL_HD int ldm_bnn_k(int lane) { return lane % 8 + ((lane / 8) % 2) * 8; }
FL_HD int ldm_bnn_n(int lane) { return (lane / 16) * 8; }

// ---- the exact-fp32 (FFMA) path: same block and warp tiles, each lane an 16 × 4 sub-tile --------
// Lane l owns rows warp_row + (l/8)·16 + i (i < 16) and columns warp_col + (l%8)·4 + j (j < 4).
FL_HD int ffma_row(int lane, int i) { return (lane / 8) * 16 + i; }
FL_HD int ffma_col(int lane, int j) { return (lane % 8) * 4 + j; }

// Warp placement inside the block tile.
FL_HD int warp_row0(int warp) { return (warp / kWarpsN) * kWM; }
FL_HD int warp_col0(int warp) { return (warp % kWarpsN) * kWN; }

}  // namespace fused_lora::cuda::tiles
