// The CUDA backend's plain C++ API: device pointers, a stream, status codes. No Node-API and no CUDA
// headers here, so the addon (and any other host program) includes it without nvcc.
//
// Layouts (row-major everywhere; docs/ARCHITECTURE.md, "Layouts and the math"):
//   x (M, I)  W (O, I)  b (O)  A (I, r) fp32 master  B (r, O) fp32 master  s = x·A (M, r)
//   r_pad = rank_pad(r): r rounded up to the GEMM's K step (16).
//   W_ext ((O + r_pad), (I + r_pad)), ld I + r_pad, compute dtype:
//     W top-left; scaling·Bᵀ in columns I..I+r-1 of rows 0..O-1; Aᵀ in rows O..O+r-1 of columns
//     0..I-1; zeros elsewhere. Refreshed from the fp32 masters by refresh_w_ext after each step.
//   x_ext (M, I + r_pad): x in columns 0..I-1, s written by the shrink into columns I..I+r-1 (the
//     rest of the padding zeroed), so the forward is one GEMM: y = x_ext · W_ext[0:O]ᵀ (K = I + r_pad).
//   dy_ext (M, O + r_pad): dy in columns 0..O-1, ds written by the dy-pass into columns O..O+r-1, so
//     dx = dy_ext · W_ext[:, 0:I] (K = O + r_pad).
// Every function enqueues work on `stream` and returns at once (except where it says otherwise);
// host buffers passed in must stay valid until the stream is synchronized.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace fused_lora::cuda {

enum class DType : int32_t { F32 = 0, BF16 = 1, F16 = 2 };

// How a GEMM over fp32 inputs multiplies: TF32 tensor cores (default) or exact fp32 FFMA.
// 16-bit inputs always use tensor cores with fp32 accumulation.
enum class Math : int32_t { Default = 0, ExactF32 = 1 };

// Where the GEMM's B operand lives: "NT" = stored (N, K), each row K-contiguous (W in the forward);
// "NN" = stored (K, N), N-contiguous (W in dx = dy·W).
enum class BLayout : int32_t { NT = 0, NN = 1 };

enum class Status : int32_t {
  Ok = 0,
  NoDevice = 1,     // no driver, no device, or the runtime cannot start
  Argument = 2,     // a shape, leading dimension or pointer the kernel cannot take
  CudaError = 3,    // a CUDA call or launch failed; last_error() has its text
  OutOfMemory = 4,
};

using Stream = void*;  // a cudaStream_t; nullptr is the legacy default stream

size_t dtype_size(DType t);
const char* dtype_name(DType t);

// The text of the last failure on this thread (empty after success).
const std::string& last_error();

struct DeviceInfo {
  bool available = false;
  std::string reason;        // why not, when !available (cudaGetDeviceCount's error string)
  int device_count = 0;
  std::string name;
  int major = 0, minor = 0;  // compute capability
  size_t memory_bytes = 0;
  int multiprocessors = 0;
  int driver_version = 0;    // e.g. 13000; 0 when no driver answers
  int runtime_version = 0;   // the runtime linked into this binary
};
// Asks the runtime once (thread-safe) and remembers the answer.
const DeviceInfo& device_info();

// ---- streams ------------------------------------------------------------------------------------
Status stream_create(Stream* out);
Status stream_destroy(Stream s);
// Blocks the calling thread until the stream's work is done. Call off the JS thread.
Status stream_synchronize(Stream s);

// ---- caching allocator (allocator.cu) -----------------------------------------------------------
// Blocks freed to the cache are reused for later allocations of a close size; a block freed on one
// stream and reused on another waits for the first stream's work with an event.
Status device_alloc(void** out, size_t bytes, Stream s);
Status device_free(void* p, Stream s);
struct AllocatorStats { size_t allocated_bytes, cached_bytes, reserved_bytes; };
AllocatorStats allocator_stats();
Status allocator_empty_cache();

// ---- copies and casts (copy_cast.cu) ------------------------------------------------------------
// Host fp32 (rows, cols, ld_src) → device dtype (ld_dst). Goes through a staging buffer.
Status upload_f32(void* dst, DType dst_t, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows,
                  int64_t cols, Stream s);
// Device dtype → host fp32. Synchronizes the stream (it must, to hand back host data).
Status download_f32(float* dst, int64_t ld_dst, const void* src, DType src_t, int64_t ld_src, int64_t rows,
                    int64_t cols, Stream s);
// Raw bytes host → device (int32 labels). Pageable host memory is staged by the runtime before this
// returns, so the host buffer may be reused at once (true of upload_f32 too).
Status upload_bytes(void* dst, const void* src, size_t bytes, Stream s);
// Device → device with conversion (fp32 ↔ bf16 ↔ fp16), 2-D with leading dimensions.
Status cast(void* dst, DType dst_t, int64_t ld_dst, const void* src, DType src_t, int64_t ld_src, int64_t rows,
            int64_t cols, Stream s);
// Fills a (rows, cols, ld) region with a value (NaN-poisoning in tests, zeros elsewhere).
Status fill(void* dst, DType t, int64_t ld, int64_t rows, int64_t cols, float value, Stream s);

// ---- memory-bound LoRA kernels ------------------------------------------------------------------
// Rank padding: r rounded up to the GEMM's K step.
int64_t rank_pad(int64_t r);

// s = x·A into x_ext's columns I..I+r-1 (and zeros into I+r..I+r_pad-1). Reads x once.
//   x_ext (M, ld_x >= I + r_pad) compute dtype; A (I, r) fp32.
Status shrink(DType t, int64_t M, int64_t I, int64_t r, void* x_ext, int64_t ld_x, const float* A, Stream s);

// The dy-pass, one read of dy: ds = scaling·dy·Bᵀ and dB (+)= scaling·sᵀ·dy.
//   dy_ext (M, ld_dy >= O + r_pad): dy in columns 0..O-1; ds is written (compute dtype) into
//   columns O..O+r-1 and zeros into the rest of the padding. ds_f32 (M, r) gets ds in fp32 (the dA
//   kernel reads it). s (M, r) compute dtype with ld_s (the padding columns of x_ext). B (r, O) fp32.
//   dB (r, O) fp32: overwritten, or added to when accumulate.
Status dy_pass(DType t, int64_t M, int64_t O, int64_t r, void* dy_ext, int64_t ld_dy, const void* s_, int64_t ld_s,
               const float* B, float scaling, float* ds_f32, float* dB, bool accumulate, Stream s);

// C(P, Q) (+)= alpha · Xᵀ·Y for X (M, P) of dtype tx and Y (M, Q) of dtype ty, C fp32 at
// C[p*ldc_p + q*ldc_q] (so Cᵀ is written by swapping the strides). For skinny Q or P (rank-sized):
// dA = xᵀ·ds, and PEFT's dB = sᵀ·du. Reads X once.
Status skinny_atb(int64_t M, int64_t P, int64_t Q, float alpha, DType tx, const void* X, int64_t ldx, DType ty,
                  const void* Y, int64_t ldy, float* C, int64_t ldc_p, int64_t ldc_q, bool accumulate, Stream s);

// Writes scaling·Bᵀ and Aᵀ (from the fp32 masters) into W_ext, zeros in its padding blocks.
Status refresh_w_ext(DType t, int64_t I, int64_t O, int64_t r, void* w_ext, int64_t ld_w, const float* A,
                     const float* B, float scaling, Stream s);

// AdamW (decoupled weight decay, bias-corrected), fp32 params, grads and moments; step counts from 1.
Status adamw(int64_t n, float* param, const float* grad, float* m, float* v, float lr, float beta1, float beta2,
             float eps, float weight_decay, int64_t step, Stream s);

// Mean-squared error over n elements: loss (device fp32 scalar) = mean((pred - target)²);
// dpred (may be null) = 2 (pred - target) / n, in pred's dtype.
Status mse_loss(DType t, int64_t n, const void* pred, const void* target, float* loss, void* dpred, Stream s);
// Cross-entropy of logits (N, C, ld) against int32 class labels, mean over rows:
// loss = mean(logsumexp(row) - row[label]); dlogits (may be null) = (softmax - onehot) / N.
// A label outside [0, C) makes that row's loss NaN (the caller validates labels).
Status cross_entropy_loss(DType t, int64_t N, int64_t C, const void* logits, int64_t ld, const int32_t* labels,
                          float* loss, void* dlogits, int64_t ld_d, Stream s);

// Elementwise: y = alpha·x + beta·y over (rows, cols) with leading dimensions (PEFT's scale and add).
Status axpby(DType t, int64_t rows, int64_t cols, float alpha, const void* x, int64_t ldx, float beta, void* y,
             int64_t ldy, Stream s);

// ---- GEMM (gemm.cu) -----------------------------------------------------------------------------
// C(M, N) = alpha · A(M, K)·op(B) + bias(N) + beta · C, all of dtype t, fp32 accumulation.
//   A row-major with lda >= K. B: NT → stored (N, K) with ldb >= K; NN → stored (K, N), ldb >= N.
//   bias may be null. beta == 0 never reads C (NaN there does not propagate).
//   Any M, N, K >= 1 and any leading dimension: 16-byte cp.async where rows are 16-byte aligned,
//   element loads otherwise.
struct GemmArgs {
  DType t = DType::F32;
  Math math = Math::Default;
  BLayout b_layout = BLayout::NT;
  int64_t M = 0, N = 0, K = 0;
  float alpha = 1.f, beta = 0.f;
  const void* A = nullptr; int64_t lda = 0;
  const void* B = nullptr; int64_t ldb = 0;
  const void* bias = nullptr;
  void* C = nullptr; int64_t ldc = 0;
};
Status gemm(const GemmArgs& g, Stream s);

// ---- the LoRA layer on the device (lora.cu) -----------------------------------------------------
struct LoraDims {
  int64_t M = 0, I = 0, O = 0, r = 0;
  float scaling = 1.f;
};

// Fused forward: shrink into x_ext, then y = x_ext · W_ext[0:O]ᵀ + b — one GEMM reading W once.
//   x_ext (M, I + r_pad) with x in its first I columns; y (M, ld_y >= O); bias (O) or null.
Status lora_forward_fused(DType t, const LoraDims& d, void* x_ext, const void* w_ext, const void* bias,
                          const float* A, void* y, int64_t ld_y, Math math, Stream s);

// Fused backward: the dy-pass (ds into dy_ext, dB), dA = xᵀ·ds, and dx = dy_ext · W_ext[:, 0:I] (one
// GEMM; skipped when dx is null). ds_f32 is an (M, r) fp32 workspace. dA (I, r), dB (r, O) fp32.
Status lora_backward_fused(DType t, const LoraDims& d, const void* x_ext, void* dy_ext, const void* w_ext,
                           const float* B, float* ds_f32, float* dA, float* dB, void* dx, int64_t ld_dx,
                           bool accumulate, Math math, Stream s);

// The unfused path, in PEFT's order, for benchmarks and as a cross-check. Operands are separate:
//   x (M, I), W (O, I), A_t (I, r) and B_t (r, O) in the compute dtype (cast from the masters),
//   s (M, r), u (M, O) a temporary; y (M, O).
//   forward: y = x·Wᵀ + b; s = x·A; u = s·B; u *= scaling; y += u.
Status lora_forward_unfused(DType t, const LoraDims& d, const void* x, const void* W, const void* bias,
                            const void* A_t, const void* B_t, void* s_, void* u, void* y, Math math, Stream s);
//   backward: dx = dy·W; du = scaling·dy; dB (+)= sᵀ·du; ds = du·Bᵀ; dA (+)= xᵀ·ds; dx += ds·Aᵀ.
//   du (M, O) and ds (M, r) are temporaries in the compute dtype; dx may be null.
Status lora_backward_unfused(DType t, const LoraDims& d, const void* x, const void* s_, const void* dy,
                             const void* W, const void* A_t, const void* B_t, void* du, void* ds, float* dA,
                             float* dB, void* dx, bool accumulate, Math math, Stream s);

// ---- many adapters on one base (multi_lora.cu) --------------------------------------------------
// The adapters' ranks concatenated: adapter i owns columns [off_i, off_i + rank_pad(r_i)) of R =
// d.r = Σ rank_pad(r_i); A_cat (I, R) and B_cat (R, O, each block scaling_i·B_i) fp32, zero in the
// padding; W_ext built from them with refresh_w_ext(r = R, scaling = 1). row_adapter (M) and
// col_adapter (R) are device int32: a row keeps the columns whose adapter is its own (-1: none).

// Zeroes element (m, c) of the (M, R) region ext (ld) unless col_adapter[c] == row_adapter[m], and
// the same element of f32 (M, R) when not null.
Status select_rank_blocks(DType t, int64_t M, int64_t R, void* ext, int64_t ld, const int32_t* row_adapter,
                          const int32_t* col_adapter, float* f32, Stream s);
// The shrink of every block, each row's own kept, then one GEMM: y = x_ext · W_ext[0:O]ᵀ + b.
Status multi_lora_forward_fused(DType t, const LoraDims& d, void* x_ext, const void* w_ext, const void* bias,
                                const float* A_cat, const int32_t* row_adapter, const int32_t* col_adapter, void* y,
                                int64_t ld_y, Math math, Stream s);
// The dy-pass over every block, each row's own ds kept; dA_cat (I, R) = xᵀ·ds and dB_cat (R, O) = sᵀ·dy
// overwritten (the caller adds block i, dB's times scaling_i, into adapter i's gradients); dx = one GEMM.
Status multi_lora_backward_fused(DType t, const LoraDims& d, const void* x_ext, void* dy_ext, const void* w_ext,
                                 const float* B_cat, const int32_t* row_adapter, const int32_t* col_adapter,
                                 float* ds_f32, float* dA_cat, float* dB_cat, void* dx, int64_t ld_dx, Math math,
                                 Stream s);

}  // namespace fused_lora::cuda
