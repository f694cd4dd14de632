// The multi-adapter layer on the CPU (fused_lora/multi_lora.h), in the spirit of Punica's SGMV: the
// frozen GEMM of each direction runs once over every row of the batch, at the batch's M, and only the
// rank-r products run per segment, each on the kernels and routes of the single-adapter layer
// (lora.cpp, routes.h): the shrink and the gradient products on the built-in GEMM, the expand and
// dx's LoRA term as rank_r_product's one write pass (a segment of one short run: as LinearLoRA
// writes it, lora_term_dx), which the frozen GEMM then adds into (beta = 1).
//
// Writes into y and dx go by runs: maximal stretches of a segment whose rows are consecutive in x.
// A grouped batch has one run per adapter; an interleaved one more, each still written in place, so
// only the inputs of the rank-r products (x̃, dy) are ever gathered, and only when not grouped.
//
// A frozen weight in reduced precision takes its own GEMMs (routes.h); bf16 activations are widened
// into fp32 buffers around the whole call, as for the single-adapter layer.
#include <algorithm>
#include <cstring>
#include <vector>

#include "fused_lora/multi_lora.h"
#include "fused_lora/threads.h"
#include "rank_r.h"
#include "routes.h"

namespace fused_lora {
namespace {

constexpr Trans N = Trans::N, T = Trans::T;

// A stretch of grouped positions [g, g + n) holding rows [row, row + n) of x; adapter -1: frozen only.
struct Run {
  int64_t g, row, n;
  int64_t adapter;
};

int64_t seg_rows(const Segments& sg, int64_t i) { return sg.start[i + 1] - sg.start[i]; }

// Every run of every segment, the frozen-only rows last. Per-thread scratch that keeps its capacity.
const std::vector<Run>& find_runs(const Segments& sg) {
  thread_local std::vector<Run> runs;
  runs.clear();
  for (int64_t i = 0; i <= sg.K; ++i) {
    const int64_t b = sg.start[i], e = i < sg.K ? sg.start[i + 1] : sg.M;
    for (int64_t g = b; g < e;) {
      int64_t n = 1;
      while (g + n < e && sg.order[g + n] == sg.order[g] + n) ++n;
      runs.push_back({g, sg.order[g], n, i < sg.K ? i : -1});
      g += n;
    }
  }
  return runs;
}

// fn(run) for each run: one after another when there are few (each product is parallel inside), else
// split over the threads (the products inside then run serially, threads.h).
template <class Fn>
void for_runs(const std::vector<Run>& runs, const Fn& fn) {
  const int64_t n = static_cast<int64_t>(runs.size());
  if (n <= 2 * int64_t(num_threads())) {
    for (const Run& r : runs) fn(r);
    return;
  }
  parallel_for(n, 1, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) fn(runs[size_t(k)]);
  });
}

// Where each adapter's block of s (and ds) starts.
const std::vector<int64_t>& s_offsets(const Segments& sg, const MultiAdapter* ad) {
  thread_local std::vector<int64_t> at;
  at.assign(size_t(sg.K), 0);
  int64_t off = 0;
  for (int64_t i = 0; i < sg.K; ++i) {
    at[size_t(i)] = off;
    off += seg_rows(sg, i) * ad[i].r;
  }
  return at;
}

// dst (n, cols) = the rows order[g0 .. g0 + n) of src (·, cols).
void gather_rows(const float* src, const int32_t* order, int64_t n, int64_t cols, float* dst) {
  parallel_for(n, std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(cols, 1)), [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) std::memcpy(dst + j * cols, src + int64_t(order[j]) * cols, sizeof(float) * size_t(cols));
  });
}

// Rows [row, row + n) of y (·, cols): the bias, or zeros.
void fill_rows(float* y, const float* bias, int64_t n, int64_t cols) {
  for (int64_t m = 0; m < n; ++m) {
    if (bias != nullptr)
      std::memcpy(y + m * cols, bias, sizeof(float) * size_t(cols));
    else
      std::memset(y + m * cols, 0, sizeof(float) * size_t(cols));
  }
}

bool in_place(const Segments& sg, const MultiAdapter& ad) { return sg.grouped && ad.dropout.p <= 0.0f; }

// The LoRA path's input of adapter i's segment, (n_i, I): x's own rows when they are one run and
// there is no dropout, else written into xt at the segment's grouped positions (gathered, then masked
// in place: dropout_forward reads each element before it writes it).
const float* segment_input(const MultiForwardArgs& a, int64_t i) {
  const Segments& sg = a.seg;
  const MultiAdapter& ad = a.adapters[i];
  const int64_t g0 = sg.start[i], n = seg_rows(sg, i), I = a.I;
  const float* rows = a.x + int64_t(sg.order[g0]) * I;
  if (in_place(sg, ad)) return rows;
  float* dst = a.xt + g0 * I;
  if (!sg.grouped) {
    gather_rows(a.x, sg.order + g0, n, I, dst);
    rows = dst;
  }
  if (ad.dropout.p > 0.0f) {
    Dropout d = ad.dropout;
    d.mask = a.mask + g0 * I;
    d.x_drop = dst;
    dropout_forward(rows, n * I, d);
  } else if (rows != dst) {
    std::memcpy(dst, rows, sizeof(float) * size_t(n * I));
  }
  return dst;
}

// Aᵀ (r, I), once per backward, of every adapter whose dx term goes through rank_r_product (which
// wants R row-major): those with rows in several runs (each a few rows: the GEMM would be a GEMV
// per run) or with rows enough for lora_term_dx to take it; null for a segment of one short run,
// which lora_term_dx writes reading A in place, as LinearLoRA does for those rows. At K = 8 × 16
// grouped rows, 4096, bf16 base, transposing every A was 6% of the batch's step. Σ I·r_i floats of
// per-thread scratch.
std::vector<const float*> transpose_As(const MultiBackwardArgs& a, const std::vector<Run>& runs) {
  thread_local std::vector<float> buf;
  thread_local std::vector<int64_t> nruns;
  const Segments& sg = a.seg;
  nruns.assign(size_t(sg.K), 0);
  for (const Run& run : runs)
    if (run.adapter >= 0) ++nruns[size_t(run.adapter)];
  const auto need = [&](int64_t i) {
    const int64_t n = nruns[size_t(i)];
    return n > 1 || (n == 1 && lora_term_dx_rank_r(seg_rows(sg, i), a.I));
  };
  int64_t total = 0;
  for (int64_t i = 0; i < sg.K; ++i) total += need(i) ? a.I * a.adapters[i].r : 0;
  if (buf.size() < size_t(total)) buf.resize(size_t(total));
  std::vector<const float*> at(size_t(sg.K), nullptr);
  int64_t off = 0;
  for (int64_t i = 0; i < sg.K; ++i) {
    if (!need(i)) continue;
    const int64_t r = a.adapters[i].r, I = a.I;
    const float* A = a.adapters[i].A;
    float* At = buf.data() + off;
    parallel_for(I, 1024, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k)
        for (int64_t j = 0; j < r; ++j) At[j * I + k] = A[k * r + j];
    });
    at[size_t(i)] = At;
    off += I * r;
  }
  return at;
}

}  // namespace

bool multi_lora_group(const int32_t* index, int64_t M, int64_t K, int32_t* order, int32_t* start) {
  // Counting sort: start[i] counts adapter i's rows, then becomes its segment's first position.
  std::fill(start, start + K + 1, 0);
  for (int64_t m = 0; m < M; ++m)
    if (index[m] >= 0) ++start[index[m] + 1];
  for (int64_t i = 0; i < K; ++i) start[i + 1] += start[i];
  thread_local std::vector<int32_t> next;
  next.assign(start, start + K);
  int64_t base = start[K];
  bool grouped = true;
  thread_local std::vector<int32_t> last;  // each adapter's previous row, to see whether its rows run on
  last.assign(size_t(K), -2);
  for (int64_t m = 0; m < M; ++m) {
    const int32_t i = index[m];
    if (i < 0) {
      order[base++] = int32_t(m);
      continue;
    }
    if (last[size_t(i)] != -2 && last[size_t(i)] != m - 1) grouped = false;
    last[size_t(i)] = int32_t(m);
    order[next[size_t(i)]++] = int32_t(m);
  }
  return grouped;
}

int64_t multi_lora_s_size(const Segments& seg, const MultiAdapter* adapters) {
  int64_t n = 0;
  for (int64_t i = 0; i < seg.K; ++i) n += seg_rows(seg, i) * adapters[i].r;
  return n;
}

bool multi_lora_needs_xt(const Segments& seg, const MultiAdapter* adapters) {
  for (int64_t i = 0; i < seg.K; ++i)
    if (seg_rows(seg, i) > 0 && !in_place(seg, adapters[i])) return true;
  return false;
}

void multi_lora_forward(const MultiForwardArgs& a) {
  const Segments& sg = a.seg;
  const int64_t I = a.I, O = a.O;
  const std::vector<int64_t>& s_at = s_offsets(sg, a.adapters);
  for (int64_t i = 0; i < sg.K; ++i) {  // s_i = x̃_i·A_i  (n_i, r_i)
    const int64_t n = seg_rows(sg, i), r = a.adapters[i].r;
    if (n == 0) continue;
    gemm(kRankRoute, N, N, n, r, I, 1.0f, segment_input(a, i), I, a.adapters[i].A, r, 0.0f, a.s + s_at[size_t(i)], r);
  }
  // y = scaling_i·s_i·B_i + b on each run (b alone on the frozen-only rows), one write pass; then
  // y += x·Wᵀ over every row with beta = 1, W read once for the whole batch.
  for_runs(find_runs(sg), [&](const Run& run) {
    float* y = a.y + run.row * O;
    if (run.adapter < 0) return fill_rows(y, a.bias, run.n, O);
    const int64_t i = run.adapter;
    const MultiAdapter& ad = a.adapters[i];
    const float* s = a.s + s_at[size_t(i)] + (run.g - sg.start[i]) * ad.r;
    rank_r_product(run.n, O, ad.r, ad.scaling, s, ad.r, ad.B, O, a.bias, y, O);
  });
  if (a.Wq.format != WFormat::F32)
    frozen_forward(a.x, a.Wq, 1.0f, a.y, a.M);
  else
    frozen_forward(a.x, a.W, false, 1.0f, a.y, a.M, I, O);
}

void multi_lora_backward(const MultiBackwardArgs& a) {
  const Segments& sg = a.seg;
  const int64_t I = a.I, O = a.O;
  const std::vector<int64_t> s_at = s_offsets(sg, a.adapters);
  for (int64_t i = 0; i < sg.K; ++i) {
    const MultiAdapter& ad = a.adapters[i];
    const int64_t g0 = sg.start[i], n = seg_rows(sg, i), r = ad.r;
    if (n == 0) continue;
    const float* dy = a.dy + int64_t(sg.order[g0]) * O;
    if (!sg.grouped) {
      gather_rows(a.dy, sg.order + g0, n, O, a.dyg + g0 * O);
      dy = a.dyg + g0 * O;
    }
    const float* xin = in_place(sg, ad) ? a.x + int64_t(sg.order[g0]) * I : a.xt + g0 * I;
    const float* s = a.s + s_at[size_t(i)];
    float* ds = a.ds + s_at[size_t(i)];
    gemm(kRankRoute, N, T, n, r, O, ad.scaling, dy, O, ad.B, O, 0.0f, ds, r);  // ds_i = scaling_i·dy_i·B_iᵀ  (n_i, r_i)
    gemm(kRankRoute, T, N, r, O, n, ad.scaling, s, r, dy, O, 1.0f, ad.dB, O);  // dB_i += scaling_i·s_iᵀ·dy_i  (r_i, O)
    gemm(kRankRoute, T, N, I, r, n, 1.0f, xin, I, ds, r, 1.0f, ad.dA, r);      // dA_i += x̃_iᵀ·ds_i  (I, r_i)
  }
  if (a.dx == nullptr) return;
  // dx = ds_i·A_iᵀ (masked like x̃_i) on each run, zeros on the frozen-only rows, in one write pass;
  // then dx += dy·W over every row with beta = 1.
  const std::vector<Run>& runs = find_runs(sg);
  const std::vector<const float*> At = transpose_As(a, runs);
  for_runs(runs, [&](const Run& run) {
    float* dx = a.dx + run.row * I;
    if (run.adapter < 0) return fill_rows(dx, nullptr, run.n, I);
    const int64_t i = run.adapter;
    const MultiAdapter& ad = a.adapters[i];
    const float* ds = a.ds + s_at[size_t(i)] + (run.g - sg.start[i]) * ad.r;
    if (At[size_t(i)] != nullptr)
      rank_r_product(run.n, I, ad.r, 1.0f, ds, ad.r, At[size_t(i)], I, nullptr, dx, I);
    else
      lora_term_dx(ds, ad.A, dx, run.n, I, ad.r);  // the segment's one run, short
    if (ad.dropout.p > 0.0f) {
      const float inv_keep = 1.0f / (1.0f - ad.dropout.p);
      const uint8_t* mask = a.mask + run.g * I;
      parallel_for(run.n * I, 1 << 16, [&](int64_t b, int64_t e) {
        for (int64_t k = b; k < e; ++k) dx[k] = mask[k] ? dx[k] * inv_keep : 0.0f;
      });
    }
  });
  if (a.Wq.format != WFormat::F32)
    frozen_backward(a.dy, a.Wq, 1.0f, a.dx, a.M);
  else
    frozen_backward(a.dy, a.W, false, 1.0f, a.dx, a.M, I, O);
}

void multi_lora_forward(MultiForwardArgs a, const Bf16Io& io) {
  a.x = widened(io.x, a.x, 0, a.M * a.I);
  if (io.y != nullptr) a.y = act_buffer(2, a.M * a.O);
  multi_lora_forward(a);
  if (io.y != nullptr) f32_to_bf16(a.y, io.y, a.M * a.O);
}

void multi_lora_backward(MultiBackwardArgs a, const Bf16Io& io) {
  a.x = widened(io.x, a.x, 0, a.M * a.I);
  a.dy = widened(io.dy, a.dy, 1, a.M * a.O);
  if (io.dx != nullptr) a.dx = act_buffer(3, a.M * a.I);
  multi_lora_backward(a);
  if (io.dx != nullptr) f32_to_bf16(a.dx, io.dx, a.M * a.I);
}

}  // namespace fused_lora
