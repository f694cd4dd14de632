// CPU checks of native/cuda/tile_math.h: the GEMM's tile counts, loader coverage and predicates at
// ragged edges, the ldmatrix addressing against the mma fragment layouts of the PTX ISA, bank
// conflicts of the padded shared-memory strides, the rank padding and the W_ext / x_ext offsets
// (checked by computing the fused forward and dx through them against the unfused formulas).
// Built with g++ by test/cuda-host.test.ts; prints one line per failed check and a summary.
#include <cmath>
#include <cstdio>
#include <set>
#include <vector>

#include "tile_math.h"

using namespace fused_lora::cuda::tiles;

static int g_checks = 0, g_failed = 0;
#define CHECK(cond, ...)                               \
  do {                                                 \
    ++g_checks;                                        \
    if (!(cond)) {                                     \
      if (++g_failed <= 40) {                          \
        std::printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
        std::printf(__VA_ARGS__);                      \
        std::printf("\n");                             \
      }                                                \
    }                                                  \
  } while (0)

static const int64_t kSizes[] = {1, 7, 15, 17, 63, 65, 127, 129, 1000};

static void tile_counts() {
  for (int64_t M : kSizes)
    for (int64_t N : kSizes) {
      Grid g = gemm_grid(M, N);
      CHECK(g.x * kBN >= N && (g.x - 1) * kBN < N, "N=%lld", (long long)N);
      CHECK(g.y * kBM >= M && (g.y - 1) * kBM < M, "M=%lld", (long long)M);
    }
  for (int eb : {2, 4})
    for (int64_t K : kSizes) {
      int64_t kt = k_tiles(K, eb);
      CHECK(kt * tile_k(eb) >= K && (kt - 1) * tile_k(eb) < K, "K=%lld eb=%d", (long long)K, eb);
    }
  CHECK(tile_k(2) == 32 && tile_k(4) == 16, "BK");
  CHECK(kWarpsM * kWM == kBM && kWarpsN * kWN == kBN && kWarpsM * kWarpsN * 32 == kThreads, "warp grid");
}

// Every chunk of a tile is copied by exactly one (thread, iteration).
static void loader_coverage() {
  for (int eb : {2, 4}) {
    std::set<std::pair<int, int>> km, nm;
    for (int t = 0; t < kThreads; ++t)
      for (int it = 0; it < kChunksPerThread; ++it) {
        Chunk a = kmajor_chunk(t, it, eb);
        CHECK(a.row >= 0 && a.row < kBM && a.col >= 0 && a.col < tile_k(eb) && a.col % elems_per_chunk(eb) == 0,
              "kmajor chunk out of tile");
        km.insert({a.row, a.col});
        Chunk b = nmajor_chunk(t, it, eb);
        CHECK(b.row >= 0 && b.row < tile_k(eb) && b.col >= 0 && b.col < kBN, "nmajor chunk out of tile");
        nm.insert({b.row, b.col});
      }
    CHECK((int)km.size() == kBM * tile_k(eb) / elems_per_chunk(eb), "kmajor coverage eb=%d", eb);
    CHECK((int)nm.size() == tile_k(eb) * kBN / elems_per_chunk(eb), "nmajor coverage eb=%d", eb);
  }
}

// Loading a (rows × cols, ld) matrix tile by tile through the predicated chunks reads only elements
// inside it, reads each one exactly once per column tile it belongs to, and zero-fills the rest.
static void predicates_at_ragged_edges() {
  for (int eb : {2, 4})
    for (int64_t rows : kSizes)
      for (int64_t cols : kSizes) {
        const int E = elems_per_chunk(eb);
        const int64_t ld = cols + 3;  // a leading dimension larger than the width
        std::vector<int> reads(rows * ld, 0);
        int64_t zero_filled = 0, bad = 0;
        for (int64_t r0 = 0; r0 < ceil_div(rows, kBM) * kBM; r0 += kBM)
          for (int64_t c0 = 0; c0 < k_tiles(cols, eb) * tile_k(eb); c0 += tile_k(eb))
            for (int t = 0; t < kThreads; ++t)
              for (int it = 0; it < kChunksPerThread; ++it) {
                Chunk c = kmajor_chunk(t, it, eb);
                int64_t row = r0 + c.row, col = c0 + c.col;
                int bytes = chunk_src_bytes(row, rows, col, cols, eb);
                CHECK(bytes % eb == 0 && bytes >= 0 && bytes <= 16, "bytes");
                int n = bytes / eb;
                for (int e = 0; e < n; ++e) {
                  if (row >= rows || col + e >= cols) ++bad;
                  else ++reads[row * ld + col + e];
                }
                zero_filled += E - n;
              }
        int64_t once = 0;
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < cols; ++c) once += reads[r * ld + c] == 1;
        CHECK(bad == 0, "out-of-bounds reads rows=%lld cols=%lld eb=%d", (long long)rows, (long long)cols, eb);
        CHECK(once == rows * cols, "coverage rows=%lld cols=%lld eb=%d", (long long)rows, (long long)cols, eb);
        int64_t tile_elems = ceil_div(rows, kBM) * kBM * k_tiles(cols, eb) * tile_k(eb);
        CHECK(zero_filled == tile_elems - rows * cols, "zero fill rows=%lld cols=%lld", (long long)rows, (long long)cols);
      }
  CHECK(chunk_valid(0, 5, 8) == 5 && chunk_valid(8, 5, 8) == 0 && chunk_valid(0, 100, 8) == 8, "chunk_valid");
  CHECK(rows_16b_aligned(256, 8, 2) && !rows_16b_aligned(256, 7, 2) && !rows_16b_aligned(258, 8, 2) &&
            rows_16b_aligned(0, 4, 4) && !rows_16b_aligned(0, 6, 4), "alignment");
}

// ldmatrix: thread t receives from matrix q the pair at (row t/4, columns 2(t%4), +1) of the 8×8
// matrix whose row i was addressed by lane 8q + i (.trans: row and column swapped).
static void ldmatrix_matches_fragments() {
  for (int t = 0; t < 32; ++t)
    for (int q = 0; q < 4; ++q)
      for (int h = 0; h < 2; ++h) {
        // A, K-major, non-transposed: register q.
        int lane = 8 * q + t / 4;
        int row = ldm_a_row(lane), col = ldm_a_col(lane) + 2 * (t % 4) + h;
        CHECK(row == frag16_a_row(t, q) && col == frag16_a_col(t, q, h), "A t=%d q=%d h=%d", t, q, h);
        // B (N, K), non-transposed: n-tile q/2, register q%2.
        int n = ldm_bnt_n(lane), k = ldm_bnt_k(lane) + 2 * (t % 4) + h;
        CHECK(n == 8 * (q / 2) + frag16_b_n(t) && k == frag16_b_k(t, q % 2, h), "Bnt t=%d q=%d h=%d", t, q, h);
        // B (K, N) with .trans: element (matrix row 2(t%4)+h, matrix column t/4).
        int lane_t = 8 * q + 2 * (t % 4) + h;
        int kk = ldm_bnn_k(lane_t), nn = ldm_bnn_n(lane_t) + t / 4;
        CHECK(nn == 8 * (q / 2) + frag16_b_n(t) && kk == frag16_b_k(t, q % 2, h), "Bnn t=%d q=%d h=%d", t, q, h);
      }
  // The accumulator and TF32 fragments each cover their tile exactly once.
  std::set<std::pair<int, int>> c, a32, b32;
  for (int t = 0; t < 32; ++t) {
    for (int i = 0; i < 4; ++i) c.insert({acc_row(t, i), acc_col(t, i)});
    for (int i = 0; i < 4; ++i) a32.insert({frag32_a_row(t, i), frag32_a_col(t, i)});
    for (int i = 0; i < 2; ++i) b32.insert({frag32_b_k(t, i), frag32_b_n(t)});
  }
  CHECK(c.size() == 128 && a32.size() == 128 && b32.size() == 64, "fragment coverage");
  std::set<std::pair<int, int>> f;
  for (int t = 0; t < 32; ++t)
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 4; ++j) f.insert({ffma_row(t, i), ffma_col(t, j)});
  CHECK((int)f.size() == kWM * kWN, "ffma coverage");
}

// Each 8-lane phase of an ldmatrix reads 8 rows of 16 bytes: conflict-free when their 16-byte bank
// groups (address / 16 mod 8) differ. TF32 fragment loads: 32 words in 32 distinct banks.
static void bank_conflicts() {
  for (int eb : {2, 4}) {
    const int lda = smem_ld_kmajor(eb), ldn = smem_ld_nmajor(eb);
    CHECK((lda * eb) % 16 == 0 && (ldn * eb) % 16 == 0, "cp.async needs 16-byte row strides");
    if (eb == 2) {
      for (int phase = 0; phase < 4; ++phase) {
        std::set<int> ga, gnt, gnn;
        for (int l = 8 * phase; l < 8 * phase + 8; ++l) {
          ga.insert(((ldm_a_row(l) * lda + ldm_a_col(l)) * 2 / 16) % 8);
          gnt.insert(((ldm_bnt_n(l) * lda + ldm_bnt_k(l)) * 2 / 16) % 8);
          gnn.insert(((ldm_bnn_k(l) * ldn + ldm_bnn_n(l)) * 2 / 16) % 8);
        }
        CHECK(ga.size() == 8 && gnt.size() == 8 && gnn.size() == 8, "ldmatrix phase %d", phase);
      }
    } else {
      for (int reg = 0; reg < 4; ++reg) {
        std::set<int> ba;
        for (int t = 0; t < 32; ++t) ba.insert((frag32_a_row(t, reg) * lda + frag32_a_col(t, reg)) % 32);
        CHECK(ba.size() == 32, "tf32 A reg %d", reg);
      }
      for (int reg = 0; reg < 2; ++reg) {
        std::set<int> bnt, bnn;
        for (int t = 0; t < 32; ++t) {
          bnt.insert((frag32_b_n(t) * lda + frag32_b_k(t, reg)) % 32);
          bnn.insert((frag32_b_k(t, reg) * ldn + frag32_b_n(t)) % 32);
        }
        CHECK(bnt.size() == 32 && bnn.size() == 32, "tf32 B reg %d", reg);
      }
    }
    CHECK(smem_bytes(eb, false) <= 227 * 1024 && smem_bytes(eb, true) <= 227 * 1024, "smem fits sm_90");
    CHECK(smem_bytes(eb, false) <= 163 * 1024, "smem fits sm_80");
  }
}

static void rank_padding_and_offsets() {
  for (int64_t r = 1; r <= 130; ++r) {
    int64_t p = rank_pad(r);
    CHECK(p % kRankStep == 0 && p >= r && p < r + kRankStep, "rank_pad(%lld)", (long long)r);
  }
  // Build W_ext and x_ext / dy_ext through the offsets, then check the fused products against the
  // unfused formulas in double: y = x·Wᵀ + scaling·(x·A)·B, dx = dy·W + ds·Aᵀ.
  const int64_t shapes[][4] = {{3, 7, 5, 1}, {2, 17, 15, 4}, {4, 15, 33, 16}, {1, 65, 63, 17}};
  for (auto& sh : shapes) {
    const int64_t M = sh[0], I = sh[1], O = sh[2], r = sh[3];
    const double scaling = 0.75;
    auto val = [](int64_t a, int64_t b, int64_t salt) { return std::sin(0.37 * a + 1.3 * b + salt); };
    std::vector<double> x(M * I), W(O * I), A(I * r), B(r * O), dy(M * O);
    for (int64_t m = 0; m < M; ++m) for (int64_t i = 0; i < I; ++i) x[m * I + i] = val(m, i, 1);
    for (int64_t o = 0; o < O; ++o) for (int64_t i = 0; i < I; ++i) W[o * I + i] = val(o, i, 2);
    for (int64_t i = 0; i < I; ++i) for (int64_t j = 0; j < r; ++j) A[i * r + j] = val(i, j, 3);
    for (int64_t j = 0; j < r; ++j) for (int64_t o = 0; o < O; ++o) B[j * O + o] = val(j, o, 4);
    for (int64_t m = 0; m < M; ++m) for (int64_t o = 0; o < O; ++o) dy[m * O + o] = val(m, o, 5);
    const int64_t ldw = ext_ld(I, r), ldy = ext_ld(O, r);
    CHECK(w_ext_elems(I, O, r) == w_ext_rows(O, r) * ldw, "w_ext_elems");
    const ExtLayout lay = ext_layout(I, O, r);
    CHECK(lay.r_pad == rank_pad(r) && lay.ldx == ldw && lay.ldy == ldy && lay.rows == O + rank_pad(r) &&
              lay.elements == w_ext_elems(I, O, r),
          "ext_layout %lld %lld %lld", (long long)I, (long long)O, (long long)r);
    std::vector<double> wext(w_ext_elems(I, O, r), 0.0), xext(M * ldw, 0.0), dyext(M * ldy, 0.0);
    std::vector<int> hits(wext.size(), 0);
    for (int64_t o = 0; o < O; ++o) for (int64_t i = 0; i < I; ++i) { wext[w_ext_W(I, r, o, i)] = W[o * I + i]; ++hits[w_ext_W(I, r, o, i)]; }
    for (int64_t o = 0; o < O; ++o) for (int64_t j = 0; j < r; ++j) { wext[w_ext_Bt(I, r, o, j)] = scaling * B[j * O + o]; ++hits[w_ext_Bt(I, r, o, j)]; }
    for (int64_t j = 0; j < r; ++j) for (int64_t i = 0; i < I; ++i) { wext[w_ext_At(I, O, r, j, i)] = A[i * r + j]; ++hits[w_ext_At(I, O, r, j, i)]; }
    int overlaps = 0;
    for (int h : hits) overlaps += h > 1;
    CHECK(overlaps == 0, "W_ext blocks overlap");
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t i = 0; i < I; ++i) xext[m * ldw + i] = x[m * I + i];
      for (int64_t j = 0; j < r; ++j) {
        double s = 0;
        for (int64_t i = 0; i < I; ++i) s += x[m * I + i] * A[i * r + j];
        xext[ext_pad(I, ldw, m, j)] = s;
      }
      for (int64_t o = 0; o < O; ++o) dyext[m * ldy + o] = dy[m * O + o];
      for (int64_t j = 0; j < r; ++j) {
        double ds = 0;
        for (int64_t o = 0; o < O; ++o) ds += dy[m * O + o] * B[j * O + o];
        dyext[ext_pad(O, ldy, m, j)] = scaling * ds;
      }
    }
    double err_y = 0, err_dx = 0;
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t o = 0; o < O; ++o) {
        double fused = 0, ref = 0;
        for (int64_t k = 0; k < ldw; ++k) fused += xext[m * ldw + k] * wext[o * ldw + k];  // NT over W_ext rows
        for (int64_t i = 0; i < I; ++i) ref += x[m * I + i] * W[o * I + i];
        for (int64_t j = 0; j < r; ++j) {
          double s = 0;
          for (int64_t i = 0; i < I; ++i) s += x[m * I + i] * A[i * r + j];
          ref += scaling * s * B[j * O + o];
        }
        err_y = std::fmax(err_y, std::fabs(fused - ref));
      }
      for (int64_t i = 0; i < I; ++i) {
        double fused = 0, ref = 0;
        for (int64_t k = 0; k < ldy; ++k) fused += dyext[m * ldy + k] * wext[k * ldw + i];  // NN over W_ext columns
        for (int64_t o = 0; o < O; ++o) ref += dy[m * O + o] * W[o * I + i];
        for (int64_t j = 0; j < r; ++j) ref += dyext[ext_pad(O, ldy, m, j)] * A[i * r + j];
        err_dx = std::fmax(err_dx, std::fabs(fused - ref));
      }
    }
    CHECK(err_y < 1e-9, "fused forward through W_ext, shape %lld %lld %lld %lld: err %g", (long long)M, (long long)I,
          (long long)O, (long long)r, err_y);
    CHECK(err_dx < 1e-9, "fused dx through W_ext, shape %lld %lld %lld %lld: err %g", (long long)M, (long long)I,
          (long long)O, (long long)r, err_dx);
  }
}

int main() {
  tile_counts();
  loader_coverage();
  predicates_at_ragged_edges();
  ldmatrix_matches_fragments();
  bank_conflicts();
  rank_padding_and_offsets();
  std::printf("tile_math: %d checks, %d failed\n", g_checks, g_failed);
  return g_failed == 0 ? 0 : 1;
}
