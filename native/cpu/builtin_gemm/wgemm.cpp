// The GEMMs over a reduced-precision frozen weight (lowp.h): C = alpha·bf16(A)·op(Ŵ) + beta·C with
// op(Ŵ) = Ŵᵀ (the forward, x·Wᵀ: NT) or Ŵ (dx = dy·W: NN). A is always row-major activations.
//
// The blocked path is driver.cpp's loop nest with packers that dequantize: each KC×NC panel of Ŵ is
// decoded (wdecode.h; decode_words below for the bf16 packers) as it is packed, once per panel and
// thread, and reused by every MC block of A,
// so the cost of decoding is spread over M and no full-size copy of W ever exists. Two packed
// formats, for three micro-kernel families:
//   - bf16 k-pairs for the avx512bf16 kernel (ukr_bf16.h): A rounded to bf16 as it is packed, B's
//     values (already bf16-exact) as pairs; KC counts k, so a sliver holds KC/2 words per lane;
//     the amx kernel (ukr_amx.h) takes the same B slivers (their depth padded to 16 words) and A's
//     rows unpacked, each row its own k-pair words, as a tile row loads them;
//   - fp32 slivers for the fp32 micro-kernels of the chosen ISA (kernels.h), with the same rounded
//     values: the widening fallback, and the same arithmetic (a bf16 product is exact in fp32).
// The decode path (M <= 8, NT) is wgemv.cpp: W's compressed bytes streamed once, decoded in
// registers: decode is bound by the bytes of W, and fewer bytes is the whole gain of a compressed W.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "fused_lora/check.h"
#include "fused_lora/lowp.h"
#include "fused_lora/threads.h"
#include "kernels.h"
#include "pack.h"
#include "plan.h"
#include "scratch.h"
#include "simd.h"
#include "ukr_amx.h"
#include "ukr_avx512.h"
#include "ukr_bf16.h"
#include "wdecode.h"
#include "wgemv.h"

namespace fused_lora {

const float kNf4Codes[16] = {-1.0f,
                             -0.6961928009986877f,
                             -0.5250730514526367f,
                             -0.39491748809814453f,
                             -0.28444138169288635f,
                             -0.18477343022823334f,
                             -0.09105003625154495f,
                             0.0f,
                             0.07958029955625534f,
                             0.16093020141124725f,
                             0.24611230194568634f,
                             0.33791524171829224f,
                             0.44070982933044434f,
                             0.5626170039176941f,
                             0.7229568362236023f,
                             1.0f};

FrozenW FrozenW::rows(int64_t o0, int64_t o1) const {
  FrozenW w = *this;
  w.O = o1 - o0;
  const int64_t e = o0 * I;
  if (f32) w.f32 = f32 + e;
  if (bf16) w.bf16 = bf16 + e;
  if (q8) w.q8 = q8 + e, w.scale = scale + o0;
  if (q4) w.q4 = q4 + e / 2, w.absmax = absmax + e / kNf4Block;
  return w;
}

int64_t FrozenW::resident_bytes() const {
  const int64_t n = O * I;
  switch (format) {
    case WFormat::F32: return 4 * n;
    case WFormat::BF16: return 2 * n;
    case WFormat::Int8: return n + 4 * O;
    case WFormat::NF4: return (n + 1) / 2 + 4 * ((n + kNf4Block - 1) / kNf4Block);
  }
  return 0;
}

namespace builtin {
namespace {

// The packed formats' kernel, with its blocking. KC is a multiple of 64 (a whole nf4 block per row
// segment of the NT packer when I allows), MC and NC whole slivers.
using UkrBf = void (*)(int64_t, const uint32_t*, const uint32_t*, float*, int64_t, float, float);
struct WKernel {
  bool bf16;  // bf16 k-pair slivers (vdpbf16ps or AMX), else fp32 slivers
  bool amx;   // the AMX tile kernel: A's slivers row-major, the depth a multiple of 16 words
  int mr, nr;
  int64_t mc, kc, nc;
  Ukr ukr;       // fp32 slivers
  UkrBf ukr_bf;  // bf16 pairs
  UkrBf ukr_bf_half;  // AMX: an edge sliver of at most 16 rows (one row tile)
  DecodeRow decode;
};

// Which family runs where the CPU has avx512_bf16. vdpbf16ps does two k per instruction, but its
// throughput is the CPU's business: on the Zen 4 guest these kernels were written on it issues about
// one zmm instruction every two cycles, so the bf16 kernel ran at ~98 GFLOP/s on L1-resident
// slivers where the fp32 kernel ran at ~172 (bench/NOTES.md). So unless FUSED_LORA_ISA names
// avx512bf16, the choice is measured once, at first use: both micro-kernels on the same tile shape
// and depth, L1-resident, best of three interleaved trials (~2 ms in all); the faster wins.
struct Calibration {
  bool bf16 = false;  // vdpbf16ps beats the fp32 kernel (the blocked GEMM's family where AMX is not)
  bool amx = false;   // the AMX tile kernel runs the blocked GEMM
  std::string reason;
};

#if FL_X86
double time_ukr(bool bf16, int reps) {
  constexpr int64_t kp = 128;
  static thread_local std::vector<uint32_t> a(14 * kp, 0x3f803f80u), b(32 * kp, 0x3f803f80u);
  static thread_local std::vector<float> af(14 * 2 * kp, 1.f), bf(32 * 2 * kp, 1.f);
  alignas(64) float c[14 * 32];
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; ++r) {
    if (bf16)
      ukr_bf16<14, 2>(kp, a.data(), b.data(), c, 32, 1.f, r == 0 ? 0.f : 1.f);
    else
      ukr_avx512<14, 2>(2 * kp, af.data(), 14, bf.data(), 32, c, 32, 1.f, r == 0 ? 0.f : 1.f);
  }
  const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  volatile float sink = c[0] + c[14 * 32 - 1];  // the products are used, so the loop stays
  (void)sink;
  return t;
}

// The AMX kernel on the same depth (256 k), L1-resident: 32 × 32 per call.
double time_amx(int reps) {
  constexpr int64_t kd = 128;
  static thread_local std::vector<uint32_t> a(32 * kd, 0x3f803f80u), b(32 * kd, 0x3f803f80u);
  alignas(64) float c[32 * 32];
  amx_begin();
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; ++r) ukr_amx<2>(kd, a.data(), b.data(), c, 32, 1.f, r == 0 ? 0.f : 1.f);
  const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  amx_end();
  volatile float sink = c[0] + c[32 * 32 - 1];
  (void)sink;
  return t;
}
#endif

Calibration calibrate() {
  Calibration c;
  const IsaChoice& ic = isa_choice();
  if (!ic.bf16) {
    c.reason = ic.best_bf16 ? "FUSED_LORA_ISA=" + ic.request + ": the fp32 kernels, widening bf16"
                            : std::string("no avx512_bf16 on this CPU: the ") + isa_name(ic.isa) + " fp32 kernels, widening bf16";
    return c;
  }
  if (ic.request == "avx512bf16" || (ic.request == "amx" && !ic.amx)) {
    // Forced; amx on a CPU without the tiles is capped to the next bf16 dot product (isa.cpp's reason).
    c.bf16 = true;
    c.reason = ic.request == "amx" ? ic.reason : "FUSED_LORA_ISA=avx512bf16";
    return c;
  }
#if FL_X86
  double tb = 1e30, tf = 1e30, ta = 1e30;
  for (int trial = 0; trial < 3; ++trial) {
    tb = std::min(tb, time_ukr(true, 300));
    tf = std::min(tf, time_ukr(false, 300));
    if (ic.amx) ta = std::min(ta, time_amx(300));
  }
  c.bf16 = tb < tf;
  const double gb = 2.0 * 14 * 32 * 256 * 300 / tb / 1e9, gf = 2.0 * 14 * 32 * 256 * 300 / tf / 1e9;
  char buf[240];
  if (ic.amx) {
    // Forced (FUSED_LORA_ISA=amx) or faster than both vector kernels.
    const double ga = 2.0 * 32 * 32 * 256 * 300 / ta / 1e9;
    c.amx = ic.request == "amx" || ga > std::max(gb, gf);
    std::snprintf(buf, sizeof buf, "%s: the AMX tile kernel %.0f GFLOP/s, the vdpbf16ps kernel %.0f GFLOP/s, the fp32 kernel %.0f GFLOP/s (one core, L1)",
                  ic.request == "amx" ? "FUSED_LORA_ISA=amx; timed at first use" : "timed at first use", ga, gb, gf);
  } else {
    std::snprintf(buf, sizeof buf, "timed at first use: the vdpbf16ps kernel %.0f GFLOP/s, the fp32 kernel %.0f GFLOP/s (one core, L1)%s%s",
                  gb, gf, ic.amx_note.empty() ? "" : "; ", ic.amx_note.c_str());
  }
  c.reason = buf;
#endif
  return c;
}

const Calibration& calibration() {
  static const Calibration c = [] {
    Calibration k = calibrate();
    k.reason += isa_choice().bf16 ? "; the decode path (M <= 8): vdpbf16ps" : "; the decode path (M <= 8): fp32 FMAs";
    if (std::strcmp(lowp_quant_decode_name(), "vnni") == 0) k.reason += ", int8 and nf4 W by VNNI integer dot products";
    return k;
  }();
  return c;
}

// AMX: 32 × 32 blocks; KC 2048 k (1024 words: a sliver of A or B is 128 KiB, L2-resident, an A
// block of 128 rows 512 KiB) because each K slab costs every C block a tile store and reload, which
// at KC 512 took a fifth of the 2048³ GEMM's time (measured: 1.3 TFLOP/s at KC 512, 1.6-1.9 at
// 1024-4096 on two Sapphire Rapids-class cores; MC 64-256 and NC 512-4096 within the noise).
// bf16: the fp32 kernel's 14×32 tile and MC; KC 1024 k is 512 pairs, the same bytes per sliver as
// fp32's KC 512, so the A block (168×1024 bf16 = 336 KiB) and B slivers sit where the fp32 ones do.
WKernel choose() {
  WKernel w{};
  const Isa is = isa();
  w.decode = is == Isa::Avx512 ? &decode_row_avx512 : is == Isa::Avx2 ? &decode_row_avx2 : &decode_row_generic;
#if FL_X86
  if (calibration().amx) {
    w.bf16 = w.amx = true;
    w.mr = 32, w.nr = 32;
    w.mc = 128, w.kc = 2048, w.nc = 4096;
    w.ukr_bf = &ukr_amx<2>;
    w.ukr_bf_half = &ukr_amx<1>;
    return w;
  }
  if (calibration().bf16) {
    w.bf16 = true;
    w.mr = 14, w.nr = 32, w.mc = 168, w.kc = 1024, w.nc = 4096;
    w.ukr_bf = &ukr_bf16<14, 2>;
    return w;
  }
#endif
  const Kernel& k = kernels().k[0];
  w.bf16 = false;
  w.mr = k.mr, w.nr = k.nr, w.mc = k.mc, w.kc = k.kc, w.nc = k.nc;
  w.ukr = k.ukr;
  return w;
}

const WKernel& wkernel() {
  static const WKernel w = choose();
  return w;
}

inline uint32_t pair(uint16_t lo, uint16_t hi) { return uint32_t(lo) | (uint32_t(hi) << 16); }
inline uint16_t bits_of(float v) {  // v already bf16-exact
  uint32_t b;
  std::memcpy(&b, &v, 4);
  return uint16_t(b >> 16);
}

// A[0:m, 0:kc] (row-major, lda) into MR slivers, rounded to bf16: fp32 values, or k-pair words.
void pack_a_f32(const float* A, int64_t lda, int64_t m, int64_t kc, int mr, float* dst) {
  pack_slivers(false, A, lda, m, kc, mr, dst);
  const int64_t n = round_up(m, mr) * kc;
  for (int64_t i = 0; i < n; ++i) dst[i] = round_to_bf16(dst[i]);
}

#if FL_X86
// The bf16 packers run only where the vdpbf16ps kernel does (isa_choice().bf16), so they may use
// AVX512_BF16 too: vcvtne2ps2bf16 rounds 32 floats to nearest even into 16 k-pair words in order
// (it flushes fp32 denormals, below 1.2e-38, to zero).
__attribute__((target("avx512f,avx512bf16"))) void pair_words(const float* a, int64_t kc, uint32_t* s) {
  int64_t p = 0;
  for (; 2 * p + 32 <= kc; p += 16) {
    const __m512bh w = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(a + 2 * p + 16), _mm512_loadu_ps(a + 2 * p));
    _mm512_storeu_si512(s + p, (__m512i)w);
  }
  for (; 2 * p + 1 < kc; ++p) s[p] = pair(bf16_round(a[2 * p]), bf16_round(a[2 * p + 1]));
  if (2 * p < kc) s[p] = bf16_round(a[2 * p]);
}

// d[j] = (r0[j], r1[j]) for two rows of bf16-exact floats: the high halves of both, interleaved.
__attribute__((target("avx512f"))) void interleave_rows(const float* r0, const float* r1, int64_t n, uint32_t* d) {
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m512i a = _mm512_castps_si512(_mm512_loadu_ps(r0 + j)), b = _mm512_castps_si512(_mm512_loadu_ps(r1 + j));
    _mm512_storeu_si512(d + j, _mm512_or_si512(_mm512_srli_epi32(a, 16), b));
  }
  for (; j < n; ++j) d[j] = pair(bits_of(r0[j]), bits_of(r1[j]));
}

// Ŵ(row, c0 .. c0 + n) as bf16 words in order, for int8 and nf4 W: what the bf16 packers need,
// without the fp32 values decode_row writes and pair_words rounds again. int8: 16 codes widened,
// × the row's scale, two such vectors rounded into 32 words by vcvtne2ps2bf16; nf4 (a whole block
// of 64 at a time): bf16(code·absmax) as a 32-word table, both nibbles of each byte looked up with
// vpermw and the even and odd elements interleaved back into order. vcvtne2ps2bf16 flushes a
// denormal product to zero where decode_row keeps it; the bf16 kernels (vdpbf16ps, AMX) read a
// denormal Ŵ as zero anyway, so the products are the same. Returns false where it does not apply
// (nf4 off a block boundary): the caller decodes through decode_row then.
alignas(64) constexpr uint16_t kInterleave[2][32] = {
    {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39, 8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47},
    {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55, 24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63}};

__attribute__((target("avx512f"), always_inline)) inline __m512 scaled_codes(__m128i b, __m512 sc) {
  return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)), sc);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) bool decode_words(const FrozenW& W, int64_t row, int64_t c0,
                                                                         int64_t n, uint16_t* out) {
  if (W.format == WFormat::Int8) {
    const int8_t* q = W.q8 + row * W.I + c0;
    const __m512 sc = _mm512_set1_ps(W.scale[row]);
    for (int64_t k = 0; k < n; k += 32) {
      const int64_t left = std::min<int64_t>(32, n - k);
      const __mmask32 m = left == 32 ? ~__mmask32(0) : __mmask32((1u << left) - 1);
      const __m256i b = _mm256_maskz_loadu_epi8(m, q + k);
      const __m512bh w = _mm512_cvtne2ps_pbh(scaled_codes(_mm256_extracti128_si256(b, 1), sc), scaled_codes(_mm256_castsi256_si128(b), sc));
      _mm512_mask_storeu_epi16(out + k, m, (__m512i)w);
    }
    return true;
  }
  if (W.format != WFormat::NF4 || c0 % kNf4Block != 0 || n % kNf4Block != 0) return false;
  const __m512 codes = _mm512_loadu_ps(kNf4Codes);
  const __m512i i0 = _mm512_load_si512(kInterleave[0]), i1 = _mm512_load_si512(kInterleave[1]);
  const int64_t e0 = row * W.I + c0;
  for (int64_t k = 0; k < n; k += kNf4Block) {
    const __m512 t = _mm512_mul_ps(codes, _mm512_set1_ps(W.absmax[(e0 + k) / kNf4Block]));
    const __m512i table = (__m512i)_mm512_cvtne2ps_pbh(t, t);  // word i: bf16(code[i % 16]·absmax)
    const __m512i q = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(W.q4 + (e0 + k) / 2)));
    const __m512i even = _mm512_permutexvar_epi16(_mm512_srli_epi16(q, 4), table);
    const __m512i odd = _mm512_permutexvar_epi16(q, table);  // the low nibble indexes (q % 32)
    _mm512_storeu_si512(out + k, _mm512_permutex2var_epi16(even, i0, odd));
    _mm512_storeu_si512(out + k + 32, _mm512_permutex2var_epi16(even, i1, odd));
  }
  return true;
}

// The same from two rows of bf16 words (a bfloat16 W read as it is stored: no decode).
__attribute__((target("avx512f"))) void interleave_bf16_rows(const uint16_t* r0, const uint16_t* r1, int64_t n,
                                                             uint32_t* d) {
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m512i a = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0 + j)));
    const __m512i b = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r1 + j)));
    _mm512_storeu_si512(d + j, _mm512_or_si512(a, _mm512_slli_epi32(b, 16)));
  }
  for (; j < n; ++j) d[j] = pair(r0[j], r1[j]);
}
#else
void pair_words(const float* a, int64_t kc, uint32_t* s) {
  int64_t p = 0;
  for (; 2 * p + 1 < kc; ++p) s[p] = pair(bf16_round(a[2 * p]), bf16_round(a[2 * p + 1]));
  if (2 * p < kc) s[p] = bf16_round(a[2 * p]);
}
void interleave_rows(const float* r0, const float* r1, int64_t n, uint32_t* d) {
  for (int64_t j = 0; j < n; ++j) d[j] = pair(bits_of(r0[j]), bits_of(r1[j]));
}
void interleave_bf16_rows(const uint16_t* r0, const uint16_t* r1, int64_t n, uint32_t* d) {
  for (int64_t j = 0; j < n; ++j) d[j] = pair(r0[j], r1[j]);
}
bool decode_words(const FrozenW&, int64_t, int64_t, int64_t, uint16_t*) { return false; }
#endif

void pack_a_bf16(const float* A, int64_t lda, int64_t m, int64_t kc, int mr, uint32_t* dst, uint32_t* stage) {
  const int64_t kp = (kc + 1) / 2;
  for (int64_t i0 = 0; i0 < m; i0 += mr) {
    const int64_t rows = std::min<int64_t>(mr, m - i0);
    for (int64_t i = 0; i < rows; ++i) pair_words(A + (i0 + i) * lda, kc, stage + i * kp);
    pack_t()(reinterpret_cast<const float*>(stage), kp, rows, mr, kp, reinterpret_cast<float*>(dst + i0 * kp));
  }
}

// A[0:m, 0:kc] for the AMX kernel: each row its k-pair words, kd per row (zero past the data), rows
// up to the next 16 zero: a sliver of 32 rows is then 32·kd words in order, and an edge sliver of
// at most 16 rows (ukr_amx<1>) reads 16.
void pack_a_amx(const float* A, int64_t lda, int64_t m, int64_t kc, int64_t kd, uint32_t* dst) {
  const int64_t kp = (kc + 1) / 2;
  for (int64_t i = 0; i < m; ++i) {
    uint32_t* d = dst + i * kd;
    pair_words(A + i * lda, kc, d);
    std::memset(d + kp, 0, sizeof(uint32_t) * size_t(kd - kp));
  }
  const int64_t rows = round_up(m, 16);
  if (rows > m) std::memset(dst + m * kd, 0, sizeof(uint32_t) * size_t((rows - m) * kd));
}

// op(Ŵ)[pc:pc+kc, jc:jc+nc] into NR slivers. NT: b(k, j) = Ŵ(j, k), each sliver's NR rows of W
// decoded into a staging tile, then transposed; NN: b(k, j) = Ŵ(k, j), row k of W decoded once for
// the whole panel width and dealt out to the slivers.
void pack_w_f32(const WKernel& w, bool nt, const FrozenW& W, int64_t pc, int64_t kc, int64_t jc, int64_t nc,
                float* dst, float* stage) {
  const int nr = w.nr;
  if (nt) {
    for (int64_t j0 = 0; j0 < nc; j0 += nr) {
      const int64_t rows = std::min<int64_t>(nr, nc - j0);
      for (int64_t j = 0; j < rows; ++j) w.decode(W, jc + j0 + j, pc, kc, stage + j * kc);
      pack_t()(stage, kc, rows, nr, kc, dst + j0 * kc);
    }
    return;
  }
  for (int64_t k = 0; k < kc; ++k) {
    w.decode(W, pc + k, jc, nc, stage);
    for (int64_t j0 = 0; j0 < nc; j0 += nr) {
      float* d = dst + j0 * kc + k * nr;
      const int64_t cols = std::min<int64_t>(nr, nc - j0);
      std::memcpy(d, stage + j0, sizeof(float) * size_t(cols));
      for (int64_t j = cols; j < nr; ++j) d[j] = 0.f;
    }
  }
}

// Each sliver holds kd >= (kc + 1) / 2 rows of words, those past the data zero (the AMX kernel's
// depth is a multiple of 16).
void pack_w_bf16(const WKernel& w, bool nt, const FrozenW& W, int64_t pc, int64_t kc, int64_t kd, int64_t jc,
                 int64_t nc, uint32_t* dst, float* stage) {
  const int nr = w.nr;
  const int64_t kp = (kc + 1) / 2;
  const auto pad = [&](int64_t j0) {
    if (kd > kp) std::memset(dst + j0 * kd + kp * nr, 0, sizeof(uint32_t) * size_t((kd - kp) * nr));
  };
  if (nt) {
    uint32_t* words = reinterpret_cast<uint32_t*>(stage) + kc + 2;  // after one decoded row
    for (int64_t j0 = 0; j0 < nc; j0 += nr) {
      const int64_t rows = std::min<int64_t>(nr, nc - j0);
      const uint32_t* src;
      int64_t ld;
      if (W.format == WFormat::BF16 && W.I % 2 == 0 && pc % 2 == 0 && kc % 2 == 0) {
        // bf16 rows hold their k-pairs as words already: transpose them in place of a decode.
        src = reinterpret_cast<const uint32_t*>(W.bf16 + (jc + j0) * W.I + pc);
        ld = W.I / 2;
      } else {
        for (int64_t j = 0; j < rows; ++j) {
          uint32_t* d = words + j * kp;
          if (decode_words(W, jc + j0 + j, pc, kc, reinterpret_cast<uint16_t*>(d))) {
            if (kc % 2 != 0) d[kp - 1] &= 0xffffu;  // the last pair's missing k
          } else {
            w.decode(W, jc + j0 + j, pc, kc, stage);
            pair_words(stage, kc, d);  // exact: the values are bf16 already
          }
        }
        src = words;
        ld = kp;
      }
      pack_t()(reinterpret_cast<const float*>(src), ld, rows, nr, kp, reinterpret_cast<float*>(dst + j0 * kd));
      pad(j0);
    }
    return;
  }
  float* row1 = stage + round_up(nc, 16);
  // Row pair p of the panel (rows pc + 2p and pc + 2p + 1 of W) dealt out to the slivers.
  const auto deal = [&](int64_t p, auto&& interleave) {
    for (int64_t j0 = 0; j0 < nc; j0 += nr) {
      uint32_t* d = dst + j0 * kd + p * nr;
      const int64_t cols = std::min<int64_t>(nr, nc - j0);
      interleave(j0, cols, d);
      for (int64_t j = cols; j < nr; ++j) d[j] = 0;
    }
  };
  // bf16 rows as stored, or int8 and nf4 rows decoded straight to words (decode_words, where it
  // applies); a zero row past K. Otherwise the rows through decode_row, as fp32.
  uint16_t* h0 = reinterpret_cast<uint16_t*>(stage);
  uint16_t* h1 = reinterpret_cast<uint16_t*>(row1);
  const bool stored = W.format == WFormat::BF16;
  if (stored || decode_words(W, pc, jc, nc, h0)) {
    for (int64_t p = 0; p < kp; ++p) {
      const int64_t k = pc + 2 * p;
      const uint16_t* r0 = h0;
      const uint16_t* r1 = h1;
      if (stored)
        r0 = W.bf16 + k * W.I + jc;
      else if (p > 0)
        decode_words(W, k, jc, nc, h0);
      if (2 * p + 1 >= kc)
        std::fill(h1, h1 + nc, uint16_t(0));
      else if (stored)
        r1 = r0 + W.I;
      else
        decode_words(W, k + 1, jc, nc, h1);
      deal(p, [&](int64_t j0, int64_t cols, uint32_t* d) { interleave_bf16_rows(r0 + j0, r1 + j0, cols, d); });
    }
  } else {
    for (int64_t p = 0; p < kp; ++p) {
      const int64_t k = pc + 2 * p;
      w.decode(W, k, jc, nc, stage);
      if (2 * p + 1 < kc)
        w.decode(W, k + 1, jc, nc, row1);
      else
        std::fill(row1, row1 + nc, 0.f);
      deal(p, [&](int64_t j0, int64_t cols, uint32_t* d) { interleave_rows(stage + j0, row1 + j0, cols, d); });
    }
  }
  for (int64_t j0 = 0; j0 < nc; j0 += nr) pad(j0);
}

void store_edge(const float* tile, int nr, float* C, int64_t ldc, int64_t m, int64_t n, float alpha, float beta) {
  for (int64_t i = 0; i < m; ++i) {
    const float* t = tile + i * nr;
    float* c = C + i * ldc;
    if (beta == 0.f)
      for (int64_t j = 0; j < n; ++j) c[j] = alpha * t[j];
    else
      for (int64_t j = 0; j < n; ++j) c[j] = alpha * t[j] + beta * c[j];
  }
}

// One thread's share: columns [j0, j0 + n) of C (rows of W for NT, columns for NN), rows [0, m).
void wgemm_serial(const WKernel& w, bool nt, int64_t m, int64_t n, int64_t j0, int64_t K, float alpha, const float* A,
                  int64_t lda, const FrozenW& W, float beta, float* C, int64_t ldc) {
  const int mr = w.mr, nr = w.nr;
  const int64_t kslabs = (K + w.kc - 1) / w.kc;
  const int64_t KC = std::min<int64_t>(w.kc, round_up((K + kslabs - 1) / kslabs, 64));
  const int64_t MC = std::min<int64_t>(w.mc, round_up(m, mr)), NC = std::min<int64_t>(w.nc, round_up(n, nr));
  // Elements per lane of a sliver: k for fp32, k-pairs for bf16, those rounded up to 16 for AMX.
  const auto depth = [&](int64_t k) { return !w.bf16 ? k : w.amx ? round_up((k + 1) / 2, 16) : (k + 1) / 2; };
  const int64_t kdepth = depth(KC);
  const int64_t ap_cap = MC * kdepth, bp_cap = NC * kdepth;
  float* ap = scratch(Slot::PackA, size_t(ap_cap));
  float* bp = scratch(Slot::PackB, size_t(bp_cap));
  // Staging: NT decodes a sliver's rows (nr × KC, plus its pair words), NN two rows of the panel, the
  // bf16 A packer a sliver's rows of words.
  const int64_t stage_cap = std::max<int64_t>({int64_t(nr) * KC + KC + 2 + int64_t(nr) * (KC / 2 + 1),
                                               2 * round_up(NC, 16), int64_t(mr) * (KC / 2 + 1)});
  float* stage = scratch(Slot::Vec, size_t(stage_cap));
  alignas(64) float tile[kMaxTile];
#if FL_X86
  if (w.amx) amx_begin();
#endif

  for (int64_t jc = 0; jc < n; jc += NC) {
    const int64_t nc = std::min(NC, n - jc);
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      const int64_t kd = depth(kc);
      const float beta_eff = pc == 0 ? beta : 1.f;
      FL_DCHECK(round_up(nc, nr) * kd <= bp_cap);
      // x·Ŵᵀ with all of m one MC block: each sliver is decoded just before its micro-kernels and
      // used from L1/L2, not a whole panel decoded to L3 and read back for that one block (as
      // driver.cpp's lazy_b). 4096², 2 threads, Sapphire Rapids class: forward M = 16 / 64 / 128
      // 1.66 / 1.41 / 1.31x faster for bf16, 1.39-1.18x int8, 1.46-1.25x nf4. dy·Ŵ keeps its panels:
      // its packer decodes along W's rows, and a sliver's 32-column runs made the step 0.91-0.99x.
      const bool lazy = nt && m <= MC;
      if (lazy) {
        // decoded per sliver below
      } else if (w.bf16)
        pack_w_bf16(w, nt, W, pc, kc, kd, j0 + jc, nc, reinterpret_cast<uint32_t*>(bp), stage);
      else
        pack_w_f32(w, nt, W, pc, kc, j0 + jc, nc, bp, stage);
      for (int64_t ic = 0; ic < m; ic += MC) {
        const int64_t mc = std::min(MC, m - ic);
        FL_DCHECK(round_up(mc, mr) * kd <= ap_cap);
        const float* Apc = A + ic * lda + pc;
        if (w.amx)
          pack_a_amx(Apc, lda, mc, kc, kd, reinterpret_cast<uint32_t*>(ap));
        else if (w.bf16)
          pack_a_bf16(Apc, lda, mc, kc, mr, reinterpret_cast<uint32_t*>(ap), reinterpret_cast<uint32_t*>(stage));
        else
          pack_a_f32(Apc, lda, mc, kc, mr, ap);
        for (int64_t jr = 0; jr < nc; jr += nr) {
          const int64_t nv = std::min<int64_t>(nr, nc - jr);
          const int64_t boff = lazy ? 0 : jr * kd;
          if (lazy) {
            if (w.bf16)
              pack_w_bf16(w, nt, W, pc, kc, kd, j0 + jc + jr, nv, reinterpret_cast<uint32_t*>(bp), stage);
            else
              pack_w_f32(w, nt, W, pc, kc, j0 + jc + jr, nv, bp, stage);
          }
          for (int64_t ir = 0; ir < mc; ir += mr) {
            const int64_t mv = std::min<int64_t>(mr, mc - ir);
            float* c = C + (ic + ir) * ldc + jc + jr;
            const bool half = w.amx && mv <= 16;  // one row tile
            const bool full = mv == (half ? 16 : mr) && nv == nr;
            float* out = full ? c : tile;
            const int64_t ldo = full ? ldc : nr;
            const float al = full ? alpha : 1.f, be = full ? beta_eff : 0.f;
            if (w.bf16)
              (half ? w.ukr_bf_half : w.ukr_bf)(kd, reinterpret_cast<const uint32_t*>(ap) + ir * kd, reinterpret_cast<const uint32_t*>(bp) + boff,
                       out, ldo, al, be);
            else
              w.ukr(kd, ap + ir * kd, mr, bp + boff, nr, out, ldo, al, be);
            if (!full) store_edge(tile, nr, c, ldc, mv, nv, alpha, beta_eff);
          }
        }
      }
    }
  }
#if FL_X86
  if (w.amx) amx_end();
#endif
}

// The decode path's kernels (wgemv.h): the vdpbf16ps ones wherever they may run (isa_choice().bf16),
// else the fp32 ISA's. Decode is bound by W's bytes and the instructions that decode them, not by
// the dot product's rate: vdpbf16ps takes Ŵ as bf16 words straight from the lookup tables, with no
// widening, so it needs fewer instructions per value even where it issues at half the FMA's rate
// (Sapphire Rapids class, 4096², M = 1: nf4 0.61 ms against 1.23 ms with fp32 FMAs; bf16 and int8
// level or ahead; bench/NOTES.md).
DecodeKernel decode_kernel() {
  if (isa_choice().bf16) return DecodeKernel::Avx512Bf16;
  const Isa is = isa();
  return is == Isa::Avx512 ? DecodeKernel::Avx512 : is == Isa::Avx2 ? DecodeKernel::Avx2 : DecodeKernel::Generic;
}

void wgemm(bool nt, int64_t M, float alpha, const float* A, int64_t lda, const FrozenW& W, float beta, float* C,
           int64_t ldc) {
  const int64_t N = nt ? W.O : W.I, K = nt ? W.I : W.O;
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.f) {
    for (int64_t i = 0; i < M; ++i) {
      float* c = C + i * ldc;
      if (beta == 0.f)
        std::memset(c, 0, sizeof(float) * size_t(N));
      else if (beta != 1.f)
        for (int64_t j = 0; j < N; ++j) c[j] *= beta;
    }
    return;
  }
  if (nt && M <= kLowpDecodeMaxRows) {
    const WKernel& w = wkernel();
    wgemv_nt(decode_kernel(), w.decode, M, alpha, A, lda, W, beta, C, ldc);
    return;
  }
  const WKernel& w = wkernel();
  // Threads split N first: each then decodes its own columns of W once (A, the cheaper pack, is
  // the one packed by every thread); rows split only when N has too few slivers.
  const double flops = 2.0 * double(M) * double(N) * double(K);
  const int64_t T = std::min<int64_t>(num_threads(), std::max<int64_t>(1, int64_t(flops / kMinFlopsPerThread)));
  const int64_t nt_ = (N + w.nr - 1) / w.nr, mt = (M + w.mr - 1) / w.mr;
  const int64_t tn = std::min(T, nt_), tm = std::max<int64_t>(1, std::min(mt, T / tn));
  auto part = [&](int64_t t) {
    const int64_t mi = t / tn, ni = t % tn;
    const int64_t i0 = std::min(M, (mi * mt / tm) * w.mr), i1 = std::min(M, ((mi + 1) * mt / tm) * w.mr);
    const int64_t c0 = std::min(N, (ni * nt_ / tn) * w.nr), c1 = std::min(N, ((ni + 1) * nt_ / tn) * w.nr);
    if (i0 >= i1 || c0 >= c1) return;
    wgemm_serial(w, nt, i1 - i0, c1 - c0, c0, K, alpha, A + i0 * lda, lda, W, beta, C + i0 * ldc + c0, ldc);
  };
  if (tm * tn <= 1)
    part(0);
  else
    parallel_for(tm * tn, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) part(t);
    });
}

}  // namespace
}  // namespace builtin

void wgemm_nt(int64_t M, float alpha, const float* A, int64_t lda, const FrozenW& W, float beta, float* C,
              int64_t ldc) {
  builtin::wgemm(true, M, alpha, A, lda, W, beta, C, ldc);
}

void wgemm_nn(int64_t M, float alpha, const float* A, int64_t lda, const FrozenW& W, float beta, float* C,
              int64_t ldc) {
  builtin::wgemm(false, M, alpha, A, lda, W, beta, C, ldc);
}

const char* lowp_kernel_name() {
  const builtin::WKernel& w = builtin::wkernel();
  return w.amx ? "amx" : w.bf16 ? "avx512bf16" : isa_name(isa());
}
const char* lowp_quant_decode_name() {
  return builtin::quant_vnni(builtin::decode_kernel(), WFormat::Int8) ? "vnni" : "bf16";
}

const std::string& lowp_kernel_reason() { return builtin::calibration().reason; }

void dequantize_rows(const FrozenW& W, int64_t o0, int64_t o1, float* out) {
  const builtin::DecodeRow decode = builtin::wkernel().decode;
  parallel_for(o1 - o0, 64, [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) decode(W, o0 + o, 0, W.I, out + o * W.I);
  });
}

}  // namespace fused_lora
