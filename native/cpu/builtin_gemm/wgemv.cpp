// The decode path (M <= 8, NT): y = alpha·bf16(x)·Ŵᵀ + beta·y, W's compressed bytes streamed once.
//
// Decode is bound by W's bytes only if decoding keeps up with them: at I = O = 4096 an nf4 W is 8 MiB
// for 16.8 M values, so two cores must decode ~9 values per cycle each. The kernels therefore
// decode in registers and keep several independent accumulator chains: R output rows at a time
// (R = 4 for M <= 2, 2 for M <= 4, else 1), each against every one of the M rows of x, so a decoded
// vector is used M times and R·M chains hide the multiply-add latency. Threads split O into slices
// of 16 outputs, as the fp32 GEMV does.
//
// What they round: exactly what the blocked path multiplies. x is rounded to bf16 (nearest even)
// once per call; Ŵ is the weight's value rounded to bf16 (lowp.h: q·scale, code·absmax in fp32,
// then to nearest even); the products, exact in fp32, are summed in fp32. Only the order of the sums
// differs between the kernels, save two (int8 and nf4 on VNNI, which round less):
//   - int8 on VNNI (beside avx512bf16): integer dot products, vpdpbusd on the int8 codes against x
//     split into two int8 parts (vnni_int8_rows). Measured on a Sapphire Rapids-class Xeon, 4096²,
//     M = 1: 0.39 ms, where looking bf16(q·scale) up for vdpbf16ps (vpermi2b tables, about 12
//     instructions per 64 values against 3) took 0.75 and fp32 W 1.56 (bench/NOTES.md).
//   - nf4 on VNNI: the code book as 16-bit integers looked up by vpermw, vpmaddwd + vpdpwssd against
//     x as 16-bit integers, one convert and FMA per block for its absmax (vnni_nf4_rows): 0.36-0.39
//     ms there, against 0.54 for the bf16 table per block and vdpbf16ps, which issues at half rate.
//   - avx512bf16 (vdpbf16ps, 32 multiply-adds per instruction): bf16 W is read as k-pair words with
//     no conversion at all; nf4 takes, per 64-value block, a 32-word table of bf16(code·absmax)
//     (one multiply and one vcvtne2ps2bf16) and looks both nibbles of 32 bytes up in it with vpermw
//     (the odd elements by the low nibble, the even ones by the byte shifted right by 4). x is laid
//     out once per call in the order those words come out in. vcvtne2ps2bf16 flushes a
//     denormal q·scale or code·absmax (below 1.2e-38) to zero, where the other kernels keep it.
//   - AVX-512F: 16 values per step widened to fp32 (bf16: a shift; int8: widen, scale, round;
//     nf4: vpermps over the code book, × absmax, round) and FMAs against fp32 x.
//   - AVX2: 8 values per vector decoded in registers (bf16: a shift; int8: widen, scale, round;
//     nf4: two 8-entry tables of bf16(code·absmax) per block, vpermps + vblendvps), fp32 FMAs.
//     (A software prefetch as the avx512bf16 kernels have measured no different here: Zen 3.)
//   - portable (and fp32 W on the AVX kernels): R rows decoded 1024 values at a time into L1
//     (wdecode.h), then dotted.
#include "wgemv.h"

#include <algorithm>
#include <cstring>

#include "fused_lora/threads.h"
#include "kernels.h"
#include "plan.h"
#include "scratch.h"
#include "simd.h"

namespace fused_lora {
namespace builtin {
namespace {

constexpr int64_t kSeg = 1024;  // the portable kernels' decoded run per row: 4 rows fill 16 KiB of L1

// Output rows per pass for M rows of x: enough independent chains at M = 1, few enough registers
// at M = 8.
constexpr int rows_per_pass(int MM) { return MM <= 2 ? 4 : MM <= 4 ? 2 : 1; }

// x as the kernels read it, each row padded with zeros to Kx = round_up(K, 64) k:
//   Floats: fp32 values (the FMA kernels);
//   Pairs: k-pair words (bf16 x[2p], bf16 x[2p+1]) (vdpbf16ps on bf16 W);
//   Nf4Pairs: per 64-value block, the 16 words (x[4d], x[4d+2]) and then (x[4d+1], x[4d+3]): the
//   pairs vpermw makes of the block's even and odd elements.
// (int8 on VNNI reads x split into int8 instead: split_x.)
enum class XLayout { Floats, Pairs, Nf4Pairs };

// int8 runs on VNNI (vnni_int8_rows) wherever the decode kernel is the avx512bf16 one and the CPU
// has AVX512-VNNI (every CPU with avx512_bf16 so far: Cooper Lake, Sapphire Rapids, Zen 4 and 5).
bool cpu_vnni() {
#if FL_X86
  static const bool v = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw");
  return v;
#else
  return false;
#endif
}

XLayout layout_of(DecodeKernel kernel, WFormat f) {
  if (kernel != DecodeKernel::Avx512Bf16 || f == WFormat::F32) return XLayout::Floats;
  if (f == WFormat::Int8) return XLayout::Floats;  // the widening kernel, where VNNI does not run
  return f == WFormat::NF4 ? XLayout::Nf4Pairs : XLayout::Pairs;
}

void prepare_x(XLayout layout, int64_t M, const float* A, int64_t lda, int64_t K, uint16_t* h, uint32_t* xp,
               int64_t stride) {
  const int64_t Kx = round_up(K, 64);
  for (int64_t m = 0; m < M; ++m) {
    const float* a = A + m * lda;
    for (int64_t k = 0; k < K; ++k) h[k] = bf16_round(a[k]);
    for (int64_t k = K; k < Kx; ++k) h[k] = 0;
    uint32_t* d = xp + m * stride;
    switch (layout) {
      case XLayout::Floats:
        for (int64_t k = 0; k < Kx; ++k) d[k] = uint32_t(h[k]) << 16;
        break;
      case XLayout::Pairs:
        for (int64_t p = 0; p < Kx / 2; ++p) d[p] = uint32_t(h[2 * p]) | uint32_t(h[2 * p + 1]) << 16;
        break;
      case XLayout::Nf4Pairs:  // K % 64 == 0
        for (int64_t b = 0; b < Kx / 64; ++b) {
          const uint16_t* s = h + 64 * b;
          for (int j = 0; j < 16; ++j) {
            d[32 * b + j] = uint32_t(s[4 * j]) | uint32_t(s[4 * j + 2]) << 16;
            d[32 * b + 16 + j] = uint32_t(s[4 * j + 1]) | uint32_t(s[4 * j + 3]) << 16;
          }
        }
        break;
    }
  }
}

// x for the VNNI int8 kernel: row m ≈ s[m]·(q1 + q2/256), q1 = round(x·127/max|x|) and q2 = round
// of the remainder × 256 (both clamped to ±127), each a row of Kx bytes, zero past K; sum1, sum2:
// Σ q1 and Σ q2 over the row.
struct SplitX {
  float s[kLowpDecodeMaxRows];
  int32_t sum1[kLowpDecodeMaxRows], sum2[kLowpDecodeMaxRows];
};

// The VNNI kernel's sums stay exact in int32 up to this K: |Σ (q + 128)·q1| <= 255·127·K < 2^31.
constexpr int64_t kVnniMaxK = 65536;

// The sum of a vector's lanes of T (float, int32_t), in lane order, through memory: once per row,
// and GCC 12's reduce intrinsics (_mm512_reduce_add_ps, extracts) trip -Wuninitialized inside their
// own headers here.
template <typename T, typename V>
__attribute__((always_inline)) inline T lane_sum(const V& v) {
  T t[sizeof(V) / sizeof(T)];
  std::memcpy(t, &v, sizeof(V));
  T s = 0;
  for (const T l : t) s += l;
  return s;
}

#if FL_X86

// Splits the M rows of x (A, lda) into q (row m at q + 2·Kx·m: q1, then q2) and sx. False, with q
// unspecified, where the split cannot stand for x: a NaN or an infinity (the widening kernel carries
// them into y as every other kernel does) or a row whose largest value is below 2^-100 but not zero
// (127 / max|x| would overflow).
__attribute__((target("avx512f,avx512bw"))) bool split_x(int64_t M, const float* A, int64_t lda, int64_t K, int8_t* q,
                                                         SplitX& sx) {
  const int64_t Kx = round_up(K, 64);
  const __m512 inf = _mm512_set1_ps(__builtin_inff());
  const __m512i lim = _mm512_set1_epi32(127), nlim = _mm512_set1_epi32(-127);
  for (int64_t m = 0; m < M; ++m) {
    const float* a = A + m * lda;
    __m512 mx = _mm512_setzero_ps();
    __mmask16 bad = 0;
    for (int64_t k = 0; k < K; k += 16) {
      const __mmask16 lm = K - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (K - k)) - 1u);
      const __m512 v = _mm512_abs_ps(_mm512_maskz_loadu_ps(lm, a + k));
      bad |= _mm512_cmp_ps_mask(v, inf, _CMP_NLT_UQ);  // NaN or ±inf
      mx = _mm512_max_ps(mx, v);
    }
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, mx);
    float amax = 0.f;
    for (const float l : lanes) amax = std::max(amax, l);
    if (bad != 0 || (amax != 0.f && amax < 0x1p-100f)) return false;
    const float s = amax > 0.f ? amax / 127.f : 1.f, inv = amax > 0.f ? 127.f / amax : 1.f;
    const __m512 sv = _mm512_set1_ps(s), inv1 = _mm512_set1_ps(inv), inv2 = _mm512_set1_ps(inv * 256.f);
    int8_t* q1 = q + 2 * Kx * m;
    int8_t* q2 = q1 + Kx;
    __m512i t1 = _mm512_setzero_si512(), t2 = _mm512_setzero_si512();
    for (int64_t k = 0; k < Kx; k += 16) {
      const __mmask16 lm = k >= K ? __mmask16(0) : K - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (K - k)) - 1u);
      const __m512 v = _mm512_maskz_loadu_ps(lm, a + k);
      const __m512i c1 = _mm512_max_epi32(nlim, _mm512_min_epi32(lim, _mm512_cvtps_epi32(_mm512_mul_ps(v, inv1))));
      const __m512 rem = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(c1), sv, v);  // v − c1·s, rounded once
      const __m512i c2 = _mm512_max_epi32(nlim, _mm512_min_epi32(lim, _mm512_cvtps_epi32(_mm512_mul_ps(rem, inv2))));
      t1 = _mm512_add_epi32(t1, c1), t2 = _mm512_add_epi32(t2, c2);
      _mm_store_si128(reinterpret_cast<__m128i*>(q1 + k), _mm512_cvtepi32_epi8(c1));
      _mm_store_si128(reinterpret_cast<__m128i*>(q2 + k), _mm512_cvtepi32_epi8(c2));
    }
    sx.s[m] = s;
    sx.sum1[m] = lane_sum<int32_t>(t1), sx.sum2[m] = lane_sum<int32_t>(t2);
  }
  return true;
}
#endif

// nf4 on VNNI: the split x as 16-bit integers, 256·q1 + q2 (within ±32639), each 64-value block as
// its 32 even elements, then its 32 odd ones: the order vpermw makes of a block's high and low
// nibbles. d: rows Kx words apart.
__attribute__((target("avx512f,avx512bw"))) void x16_nf4(int64_t M, const int8_t* q, int64_t Kx, int16_t* d) {
  alignas(64) int16_t ev[32], od[32];
  for (int i = 0; i < 32; ++i) ev[i] = int16_t(2 * i), od[i] = int16_t(2 * i + 1);
  const __m512i ie = _mm512_load_si512(ev), io = _mm512_load_si512(od);
  for (int64_t m = 0; m < M; ++m) {
    const int8_t* q1 = q + 2 * Kx * m;
    const int8_t* q2 = q1 + Kx;
    int16_t* dm = d + Kx * m;
    for (int64_t b = 0; b < Kx; b += 64) {
      __m512i w[2];
      for (int h = 0; h < 2; ++h) {
        const __m512i a = _mm512_cvtepi8_epi16(_mm256_load_si256(reinterpret_cast<const __m256i*>(q1 + b + 32 * h)));
        const __m512i c = _mm512_cvtepi8_epi16(_mm256_load_si256(reinterpret_cast<const __m256i*>(q2 + b + 32 * h)));
        w[h] = _mm512_add_epi16(_mm512_slli_epi16(a, 8), c);
      }
      _mm512_store_si512(dm + b, _mm512_permutex2var_epi16(w[0], ie, w[1]));
      _mm512_store_si512(dm + b + 32, _mm512_permutex2var_epi16(w[0], io, w[1]));
    }
  }
}

// Everything a kernel needs for rows [o0, o1) of the output.
struct Job {
  DecodeRow decode;
  const FrozenW* W;
  int64_t M, K;
  const uint32_t* x;  // prepared (XLayout), rows `xs` 32-bit units apart
  int64_t xs;
  float alpha, beta;
  float* C;
  int64_t ldc;
  float* row;  // this thread's buffer, R·kSeg floats
  const SplitX* split = nullptr;  // the VNNI kernels' x (x then holds its int8 or 16-bit rows)
};

inline void store(const Job& j, int64_t o, int R, int MM, const float* s) {
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MM; ++m) {
      float* c = j.C + m * j.ldc + o + r;
      const float v = s[r * MM + m];
      *c = j.beta == 0.f ? j.alpha * v : j.alpha * v + j.beta * *c;
    }
}

// Rows [o0, o1) of the output through the kernel Rows: Rows::pass(MM) output rows at a time, then
// one at a time, for the job's M (1 .. kLowpDecodeMaxRows, a template argument so that the kernels
// unroll over it).
template <typename Rows, int MM>
void range_of(const Job& j, int64_t o0, int64_t o1) {
  constexpr int R = Rows::pass(MM);
  float s[R * MM];
  int64_t o = o0;
  for (; o + R <= o1; o += R) Rows::template run<MM, R>(j, o, s), store(j, o, R, MM, s);
  for (; o < o1; ++o) Rows::template run<MM, 1>(j, o, s), store(j, o, 1, MM, s);
}

template <typename Rows, int MM = int(kLowpDecodeMaxRows)>
void range_any_m(const Job& j, int64_t o0, int64_t o1) {
  if (j.M == MM) return range_of<Rows, MM>(j, o0, o1);
  if constexpr (MM > 1) range_any_m<Rows, MM - 1>(j, o0, o1);
}

// ---- portable: R rows decoded a run at a time, then R·M dot products of L lanes each ----

template <int R, int L>
__attribute__((always_inline)) inline void portable_rows(const Job& j, int64_t o, float* __restrict s) {
  const int64_t M = j.M, K = j.K;
  const float* xf = reinterpret_cast<const float*>(j.x);
  float* __restrict row = j.row;
  for (int i = 0; i < R * M; ++i) s[i] = 0.f;
  for (int64_t k0 = 0; k0 < K; k0 += kSeg) {
    const int64_t n = std::min(kSeg, K - k0);
    for (int r = 0; r < R; ++r) j.decode(*j.W, o + r, k0, n, row + r * kSeg);
    for (int64_t m = 0; m < M; ++m) {
      const float* __restrict x = xf + m * j.xs + k0;
      float acc[R][L] = {};
      int64_t k = 0;
      for (; k + L <= n; k += L)
        for (int r = 0; r < R; ++r)
          for (int l = 0; l < L; ++l) acc[r][l] += x[k + l] * row[r * kSeg + k + l];
      for (int r = 0; r < R; ++r) {
        float t = 0.f;
        for (int l = 0; l < L; ++l) t += acc[r][l];
        for (int64_t kk = k; kk < n; ++kk) t += x[kk] * row[r * kSeg + kk];
        s[r * M + m] += t;
      }
    }
  }
}

template <int L>
__attribute__((always_inline)) inline void portable_range(const Job& j, int64_t o0, int64_t o1) {
  float s[4 * kLowpDecodeMaxRows];
  const int R = rows_per_pass(int(j.M));
  int64_t o = o0;
  for (; R == 4 && o + 4 <= o1; o += 4) portable_rows<4, L>(j, o, s), store(j, o, 4, int(j.M), s);
  for (; R >= 2 && o + 2 <= o1; o += 2) portable_rows<2, L>(j, o, s), store(j, o, 2, int(j.M), s);
  for (; o < o1; ++o) portable_rows<1, L>(j, o, s), store(j, o, 1, int(j.M), s);
}

void range_generic(const Job& j, int64_t o0, int64_t o1) { portable_range<8>(j, o0, o1); }

#if FL_X86
// ---- AVX2: 8 values per vector, decoded in registers, fp32 FMAs ----

__attribute__((target("avx2,fma"), always_inline)) inline __m256 to_bf16(__m256 v) {
  __m256i b = _mm256_castps_si256(v);
  b = _mm256_add_epi32(_mm256_add_epi32(b, _mm256_set1_epi32(0x7fff)), _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1)));
  return _mm256_castsi256_ps(_mm256_and_si256(b, _mm256_set1_epi32(int(0xffff0000u))));
}


// R output rows against MM rows of fp32 x. bf16: widened by a shift; int8: widened, × the row's
// scale, rounded; nf4: per 64-value block, the code book × absmax rounded to bf16 as two 8-entry
// tables (codes 0-7, 8-15), and each nibble looked up in both (vpermps on its low 3 bits) and
// chosen by its bit 3 (vblendvps on the nibble shifted into the sign).
template <WFormat F, int MM, int R>
__attribute__((target("avx2,fma"))) void avx2_rows(const Job& j, int64_t o, float* s) {
  const FrozenW& W = *j.W;
  const int64_t K = j.K, K8 = K / 8 * 8;
  const float* xf = reinterpret_cast<const float*>(j.x);
  __m256 acc[R][MM];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MM; ++m) acc[r][m] = _mm256_setzero_ps();
  if constexpr (F == WFormat::NF4) {  // I % 64 == 0: every block whole, no tail
    // Two accumulators per (row, x row) where registers allow (the two vectors of 16 nibbles), so
    // the FMA chains are not serial; the tables and accumulators then fill the 16 ymm registers.
    constexpr int A = R * MM * 2 <= 8 ? 2 : 1;
    __m256 acc2[R][MM];
    for (int r = 0; r < R; ++r)
      for (int m = 0; m < MM; ++m) acc2[r][m] = _mm256_setzero_ps();
    const __m256 codes_lo = _mm256_loadu_ps(kNf4Codes), codes_hi = _mm256_loadu_ps(kNf4Codes + 8);
    const __m128i low4 = _mm_set1_epi8(0x0f);
    for (int64_t k0 = 0; k0 < K; k0 += kNf4Block) {
      __m256 lo[R], hi[R];
      for (int r = 0; r < R; ++r) {
        const int64_t e = (o + r) * W.I + k0;
        const __m256 a = _mm256_set1_ps(W.absmax[e / kNf4Block]);
        lo[r] = to_bf16(_mm256_mul_ps(codes_lo, a));
        hi[r] = to_bf16(_mm256_mul_ps(codes_hi, a));
      }
      for (int64_t k = k0; k < k0 + kNf4Block; k += 16) {
        for (int r = 0; r < R; ++r) {
          const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(W.q4 + (((o + r) * W.I + k) >> 1)));
          const __m128i nib = _mm_unpacklo_epi8(_mm_and_si128(_mm_srli_epi16(bytes, 4), low4), _mm_and_si128(bytes, low4));
          const __m256i i0 = _mm256_cvtepu8_epi32(nib), i1 = _mm256_cvtepu8_epi32(_mm_srli_si128(nib, 8));
          const __m256 v0 = _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo[r], i0), _mm256_permutevar8x32_ps(hi[r], i0),
                                             _mm256_castsi256_ps(_mm256_slli_epi32(i0, 28)));
          const __m256 v1 = _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo[r], i1), _mm256_permutevar8x32_ps(hi[r], i1),
                                             _mm256_castsi256_ps(_mm256_slli_epi32(i1, 28)));
          for (int m = 0; m < MM; ++m) {
            acc[r][m] = _mm256_fmadd_ps(_mm256_load_ps(xf + m * j.xs + k), v0, acc[r][m]);
            if constexpr (A == 2)
              acc2[r][m] = _mm256_fmadd_ps(_mm256_load_ps(xf + m * j.xs + k + 8), v1, acc2[r][m]);
            else
              acc[r][m] = _mm256_fmadd_ps(_mm256_load_ps(xf + m * j.xs + k + 8), v1, acc[r][m]);
          }
        }
      }
    }
    for (int r = 0; r < R; ++r)
      for (int m = 0; m < MM; ++m) s[r * MM + m] = lane_sum<float>(A == 2 ? _mm256_add_ps(acc[r][m], acc2[r][m]) : acc[r][m]);
    return;
  } else {
    __m256 sc[R];
    for (int r = 0; r < R; ++r) sc[r] = F == WFormat::Int8 ? _mm256_set1_ps(W.scale[o + r]) : _mm256_setzero_ps();
    for (int64_t k = 0; k < K8; k += 8) {
      for (int r = 0; r < R; ++r) {
        const int64_t e = (o + r) * W.I + k;
        __m256 v;
        if constexpr (F == WFormat::BF16)
          v = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(W.bf16 + e))), 16));
        else
          v = to_bf16(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(W.q8 + e)))), sc[r]));
        for (int m = 0; m < MM; ++m) acc[r][m] = _mm256_fmadd_ps(_mm256_load_ps(xf + m * j.xs + k), v, acc[r][m]);
      }
    }
    const int64_t tail = K - K8;
    for (int r = 0; r < R; ++r) {
      if (tail > 0) j.decode(W, o + r, K8, tail, j.row);
      for (int m = 0; m < MM; ++m) {
        float t = lane_sum<float>(acc[r][m]);
        for (int64_t k = 0; k < tail; ++k) t += xf[m * j.xs + K8 + k] * j.row[k];
        s[r * MM + m] = t;
      }
    }
  }
}

// nf4 holds two table registers per row: 2 rows at M = 1, one from M = 2, so nothing spills.
template <WFormat F>
constexpr int avx2_rows_per_pass(int MM) {
  return F == WFormat::NF4 ? (MM == 1 ? 2 : 1) : rows_per_pass(MM);
}

template <WFormat F>
struct Avx2Rows {
  static constexpr int pass(int MM) { return avx2_rows_per_pass<F>(MM); }
  template <int MM, int R>
  static void run(const Job& j, int64_t o, float* s) { avx2_rows<F, MM, R>(j, o, s); }
};

__attribute__((target("avx2,fma"))) void range_avx2_portable(const Job& j, int64_t o0, int64_t o1) {
  portable_range<16>(j, o0, o1);
}

void range_avx2(const Job& j, int64_t o0, int64_t o1) {
  switch (j.W->format) {
    case WFormat::BF16: return range_any_m<Avx2Rows<WFormat::BF16>>(j, o0, o1);
    case WFormat::Int8: return range_any_m<Avx2Rows<WFormat::Int8>>(j, o0, o1);
    case WFormat::NF4: return range_any_m<Avx2Rows<WFormat::NF4>>(j, o0, o1);
    case WFormat::F32: return range_avx2_portable(j, o0, o1);
  }
}

__attribute__((target("avx512f"))) void range_avx512_portable(const Job& j, int64_t o0, int64_t o1) {
  portable_range<32>(j, o0, o1);
}


// ---- AVX-512F: 16 values per step, decoded in registers, fp32 FMAs ----

__attribute__((target("avx512f"), always_inline)) inline __m512 to_bf16(__m512 v) {
  __m512i b = _mm512_castps_si512(v);
  b = _mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7fff)), _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1)));
  return _mm512_castsi512_ps(_mm512_and_si512(b, _mm512_set1_epi32(int(0xffff0000u))));
}

template <WFormat F, int MM, int R>
__attribute__((target("avx512f,avx512bw"))) void avx512_rows(const Job& j, int64_t o, float* s) {
  const FrozenW& W = *j.W;
  const int64_t K = j.K, K16 = K / 16 * 16;
  const float* xf = reinterpret_cast<const float*>(j.x);
  const __m512 codes = _mm512_loadu_ps(kNf4Codes);
  const __m128i low4 = _mm_set1_epi8(0x0f);
  __m512 acc[R][MM], sc[R];
  for (int r = 0; r < R; ++r) {
    for (int m = 0; m < MM; ++m) acc[r][m] = _mm512_setzero_ps();
    sc[r] = F == WFormat::Int8 ? _mm512_set1_ps(W.scale[o + r]) : _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < K16; k += 16) {
    __m512 x[MM];
    for (int m = 0; m < MM; ++m) x[m] = _mm512_load_ps(xf + m * j.xs + k);
    for (int r = 0; r < R; ++r) {
      const int64_t e = (o + r) * W.I + k;
      __m512 v;
      if constexpr (F == WFormat::BF16) {
        v = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(W.bf16 + e))), 16));
      } else if constexpr (F == WFormat::Int8) {
        v = to_bf16(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(W.q8 + e)))), sc[r]));
      } else {  // NF4: e is a multiple of 16 (I % 64 == 0), so the 16 values lie in one block
        const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(W.q4 + (e >> 1)));
        const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), low4), lo = _mm_and_si128(bytes, low4);
        v = to_bf16(_mm512_mul_ps(_mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(hi, lo)), codes),
                                  _mm512_set1_ps(W.absmax[e / kNf4Block])));
      }
      for (int m = 0; m < MM; ++m) acc[r][m] = _mm512_fmadd_ps(x[m], v, acc[r][m]);
    }
  }
  const int64_t tail = K - K16;
  for (int r = 0; r < R; ++r) {
    if (tail > 0) j.decode(W, o + r, K16, tail, j.row);
    for (int m = 0; m < MM; ++m) {
      float t = lane_sum<float>(acc[r][m]);
      for (int64_t k = 0; k < tail; ++k) t += xf[m * j.xs + K16 + k] * j.row[k];
      s[r * MM + m] = t;
    }
  }
}

// ---- avx512bf16: vdpbf16ps against k-pair words of Ŵ ----

#define FL_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16"), always_inline)) inline

FL_BF16_TARGET __m512bh x_words(const Job& j, int m, int64_t p) {
  return (__m512bh)_mm512_load_si512(j.x + m * j.xs + p);
}

// Each row is its own stream, R of them at once; the hardware prefetchers alone left bf16 W at ~37
// GB/s where fp32 W streams at ~43 (bench/NOTES.md). So each kernel asks for the line 1 KiB ahead.
constexpr int64_t kPrefetchBytes = 1024;
constexpr int64_t kPrefetch = kPrefetchBytes / 2;  // bf16 values

// bf16 W: 32 values from flat element e as they are stored (n < 32: the first n, the rest zero).
template <int MM, int R>
FL_BF16_TARGET void bf16_step(const Job& j, int64_t o, int64_t k, int64_t n, __m512 (&acc)[R][MM]) {
  __m512bh x[MM];
  for (int m = 0; m < MM; ++m) x[m] = x_words(j, m, k / 2);
  for (int r = 0; r < R; ++r) {
    const uint16_t* w = j.W->bf16 + (o + r) * j.W->I + k;
    _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetch), _MM_HINT_T0);
    const __m512bh v = (__m512bh)(n == 32 ? _mm512_loadu_si512(w) : _mm512_maskz_loadu_epi16(__mmask32((1u << n) - 1), w));
    for (int m = 0; m < MM; ++m) acc[r][m] = _mm512_dpbf16_ps(acc[r][m], v, x[m]);
  }
}

// bf16 and nf4 W.
template <WFormat F, int MM, int R>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void bf16_rows(const Job& j, int64_t o, float* s) {
  const FrozenW& W = *j.W;
  const int64_t K = j.K;
  __m512 acc[R][MM];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MM; ++m) acc[r][m] = _mm512_setzero_ps();
  if constexpr (F == WFormat::NF4) {
    const __m512 codes = _mm512_loadu_ps(kNf4Codes);
    for (int64_t b = 0; b < K / kNf4Block; ++b) {
      __m512bh xe[MM], xo[MM];
      for (int m = 0; m < MM; ++m) xe[m] = x_words(j, m, 32 * b), xo[m] = x_words(j, m, 32 * b + 16);
      for (int r = 0; r < R; ++r) {
        const int64_t e = (o + r) * W.I + kNf4Block * b;
        const __m512 t = _mm512_mul_ps(codes, _mm512_set1_ps(W.absmax[e / kNf4Block]));
        const __m512i table = (__m512i)_mm512_cvtne2ps_pbh(t, t);  // word i: bf16(code[i % 16]·absmax)
        const uint8_t* p = W.q4 + e / 2;
        if (b % 2 == 0) _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes), _MM_HINT_T0);
        const __m512i q = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
        const __m512i even = _mm512_permutexvar_epi16(_mm512_srli_epi16(q, 4), table);
        const __m512i odd = _mm512_permutexvar_epi16(q, table);  // index q % 32: the low nibble, + 16 or not
        for (int m = 0; m < MM; ++m) {
          acc[r][m] = _mm512_dpbf16_ps(acc[r][m], (__m512bh)even, xe[m]);
          acc[r][m] = _mm512_dpbf16_ps(acc[r][m], (__m512bh)odd, xo[m]);
        }
      }
    }
  } else {
    const int64_t K32 = K / 32 * 32;
    for (int64_t k = 0; k < K32; k += 32) bf16_step<MM, R>(j, o, k, 32, acc);
    if (K32 < K) bf16_step<MM, R>(j, o, K32, K - K32, acc);
  }
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MM; ++m) s[r * MM + m] = lane_sum<float>(acc[r][m]);
}

// int8 on VNNI: exact integer dot products. Each row of x is split once per call into two int8
// vectors, x ≈ s·(q1 + q2/256) with s = max|x|/127 (SplitX), and vpdpbusd multiplies 64 bytes of W
// against each: 128 multiply-adds per row per 64 values in two instructions, with nothing to decode
// (the int8 codes are the operand; the sign bit flipped makes them the unsigned one, q + 128, and
// 128·Σq takes the offset back out). What it rounds differs from the other kernels, as lowp.h says:
// x to ~16 bits against its row's largest value, Ŵ = q·scale not at all, the sums exact in int32
// (K <= kVnniMaxK), then y = scale·s·(Σ q1·q + Σ q2·q / 256) in fp32.
template <int MM, int R>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void vnni_int8_rows(const Job& j, int64_t o, float* s) {
  const FrozenW& W = *j.W;
  const int64_t K = j.K, Kx = round_up(K, 64);
  const int8_t* xq = reinterpret_cast<const int8_t*>(j.x);
  const int64_t xs = 4 * j.xs;  // bytes per row of x: q1 (Kx bytes), then q2
  __m512i a1[R][MM], a2[R][MM];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MM; ++m) a1[r][m] = _mm512_setzero_si512(), a2[r][m] = _mm512_setzero_si512();
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  for (int64_t k = 0; k < K; k += 64) {
    const int64_t n = std::min<int64_t>(64, K - k);
    __m512i x1[MM], x2[MM];
    for (int m = 0; m < MM; ++m)
      x1[m] = _mm512_load_si512(xq + m * xs + k), x2[m] = _mm512_load_si512(xq + m * xs + Kx + k);
    for (int r = 0; r < R; ++r) {
      const int8_t* p = W.q8 + (o + r) * W.I + k;
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes), _MM_HINT_T0);
      const __m512i q = n == 64 ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi8(__mmask64(~uint64_t(0) >> (64 - n)), p);
      const __m512i u = _mm512_xor_si512(q, flip);  // q + 128; past n: 128 against x's zero padding
      for (int m = 0; m < MM; ++m) {
        a1[r][m] = _mm512_dpbusd_epi32(a1[r][m], u, x1[m]);
        a2[r][m] = _mm512_dpbusd_epi32(a2[r][m], u, x2[m]);
      }
    }
  }
  const SplitX& sx = *j.split;
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MM; ++m) {
      const int32_t d1 = lane_sum<int32_t>(a1[r][m]) - 128 * sx.sum1[m], d2 = lane_sum<int32_t>(a2[r][m]) - 128 * sx.sum2[m];
      s[r * MM + m] = (float(d1) + float(d2) * (1.f / 256.f)) * (W.scale[o + r] * sx.s[m]);
    }
}

#undef FL_BF16_TARGET

// The AVX-512 kernels of R rows: vdpbf16ps (Bf16) for bf16 and nf4 W; int8 beside avx512bf16, where
// VNNI does not take it (wgemv_nt), widens as on the AVX-512F kernel (layout_of agrees).
template <bool Bf16, WFormat F>
struct RegRows {
  static constexpr int pass(int MM) { return rows_per_pass(MM); }
  template <int MM, int R>
  static void run(const Job& j, int64_t o, float* s) {
    if constexpr (Bf16 && F != WFormat::Int8)
      bf16_rows<F, MM, R>(j, o, s);
    else
      avx512_rows<F, MM, R>(j, o, s);
  }
};

// nf4 on VNNI: the code book as 16-bit integers, round(code·16383) (within 3.1e-5 of each code;
// bf16(code·absmax) rounds to 2^-9 of the value), looked up by vpermw as the bf16 tables are, and
// multiplied against the 16-bit x by vpmaddwd and vpdpwssd: a block's four products per lane stay
// within 4·16383·32639 < 2^31. Each block's sum is converted and multiplied by its absmax in fp32.
constexpr float kNf4Scale16 = 16383.f;

struct Nf4Words {
  alignas(64) int16_t w[32];
  Nf4Words() {
    for (int i = 0; i < 32; ++i) w[i] = int16_t(__builtin_lrintf(kNf4Codes[i % 16] * kNf4Scale16));
  }
};

template <int MM, int R>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void vnni_nf4_rows(const Job& j, int64_t o, float* s) {
  static const Nf4Words words;
  const FrozenW& W = *j.W;
  const int64_t K = j.K;  // a multiple of 64
  const int16_t* x = reinterpret_cast<const int16_t*>(j.x);
  const int64_t xs = 2 * j.xs;  // words per row of x
  const __m512i table = _mm512_load_si512(words.w);
  __m512 acc[R][MM];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MM; ++m) acc[r][m] = _mm512_setzero_ps();
  const int64_t nb = K / kNf4Block;  // blocks per row
  const uint8_t* q4 = W.q4 + o * (K / 2);
  const float* am = W.absmax + o * nb;
  for (int64_t b = 0; b < nb; ++b) {
    __m512i xe[MM], xo[MM];
    for (int m = 0; m < MM; ++m)
      xe[m] = _mm512_load_si512(x + m * xs + 64 * b), xo[m] = _mm512_load_si512(x + m * xs + 64 * b + 32);
    for (int r = 0; r < R; ++r) {
      const __m512 a = _mm512_set1_ps(am[r * nb + b]);
      const uint8_t* p = q4 + r * (K / 2) + 32 * b;
      if (b % 2 == 0) _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes), _MM_HINT_T0);
      const __m512i q = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
      const __m512i even = _mm512_permutexvar_epi16(_mm512_srli_epi16(q, 4), table);
      const __m512i odd = _mm512_permutexvar_epi16(q, table);  // index q % 32: the low nibble, + 16 or not
      for (int m = 0; m < MM; ++m) {
        const __m512i t = _mm512_dpwssd_epi32(_mm512_madd_epi16(even, xe[m]), odd, xo[m]);
        acc[r][m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), a, acc[r][m]);
      }
    }
  }
  const SplitX& sx = *j.split;
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MM; ++m) s[r * MM + m] = lane_sum<float>(acc[r][m]) * (sx.s[m] / (256.f * kNf4Scale16));
}

// The VNNI kernels of R rows, by W's format.
template <WFormat F>
struct VnniRows {
  static constexpr int pass(int MM) { return rows_per_pass(MM); }
  template <int MM, int R>
  static void run(const Job& j, int64_t o, float* s) {
    if constexpr (F == WFormat::Int8)
      vnni_int8_rows<MM, R>(j, o, s);
    else
      vnni_nf4_rows<MM, R>(j, o, s);
  }
};

template <bool Bf16>
void range_regs_any(const Job& j, int64_t o0, int64_t o1) {
  switch (j.W->format) {
    case WFormat::BF16: return range_any_m<RegRows<Bf16, WFormat::BF16>>(j, o0, o1);
    case WFormat::Int8: return range_any_m<RegRows<Bf16, WFormat::Int8>>(j, o0, o1);
    case WFormat::NF4: return range_any_m<RegRows<Bf16, WFormat::NF4>>(j, o0, o1);
    case WFormat::F32: return range_avx512_portable(j, o0, o1);
  }
}
#endif

using RangeFn = void (*)(const Job&, int64_t, int64_t);

RangeFn range_fn(DecodeKernel kernel) {
#if FL_X86
  switch (kernel) {
    case DecodeKernel::Avx512Bf16: return &range_regs_any<true>;
    case DecodeKernel::Avx512: return &range_regs_any<false>;
    case DecodeKernel::Avx2: return &range_avx2;
    case DecodeKernel::Generic: break;
  }
#endif
  return &range_generic;
}

}  // namespace

bool quant_vnni(DecodeKernel kernel, WFormat format) {
  return kernel == DecodeKernel::Avx512Bf16 && (format == WFormat::Int8 || format == WFormat::NF4) && cpu_vnni();
}

void wgemv_nt(DecodeKernel kernel, DecodeRow decode, int64_t M, float alpha, const float* A, int64_t lda,
              const FrozenW& W, float beta, float* C, int64_t ldc) {
  const int64_t K = W.I, N = W.O;
  const int64_t Kx = round_up(K, 64);
  SplitX sx;
  const SplitX* split = nullptr;
  uint32_t* xp = nullptr;
  int64_t stride = 0;
  RangeFn fn = nullptr;
#if FL_X86
  if (quant_vnni(kernel, W.format) && (W.format == WFormat::NF4 || K <= kVnniMaxK)) {
    stride = Kx / 2;  // int8 reads the split as it is (q1, q2: 2·Kx bytes a row), nf4 as Kx 16-bit values
    int8_t* q = reinterpret_cast<int8_t*>(scratch(Slot::PackA, size_t(M * stride)));
    if (split_x(M, A, lda, K, q, sx)) {
      split = &sx;
      if (W.format == WFormat::Int8) {
        xp = reinterpret_cast<uint32_t*>(q);
        fn = &range_any_m<VnniRows<WFormat::Int8>>;
      } else {
        xp = reinterpret_cast<uint32_t*>(scratch(Slot::PackB, size_t(M * stride)));
        x16_nf4(M, q, Kx, reinterpret_cast<int16_t*>(xp));
        fn = &range_any_m<VnniRows<WFormat::NF4>>;
      }
    }
  }
#endif
  if (split == nullptr) {
    const XLayout layout = layout_of(kernel, W.format);
    stride = layout == XLayout::Floats ? Kx : Kx / 2;
    xp = reinterpret_cast<uint32_t*>(scratch(Slot::PackA, size_t(M * stride)));
    uint16_t* h = reinterpret_cast<uint16_t*>(scratch(Slot::PackB, size_t(Kx / 2)));
    prepare_x(layout, M, A, lda, K, h, xp, stride);
    fn = range_fn(kernel);
  }
  const double bytes = double(W.resident_bytes());
  const int64_t blocks = (N + 15) / 16;
  const int64_t threads = std::max<int64_t>(
      1, std::min<int64_t>({int64_t(num_threads()), int64_t(bytes / kMinGemvBytesPerThread), blocks}));
  parallel_for(blocks, (blocks + threads - 1) / threads, [&](int64_t b0, int64_t b1) {
    const int64_t o0 = b0 * 16, o1 = std::min(N, b1 * 16);
    if (o0 >= o1) return;
    const Job j{decode, &W, M, K, xp, stride, alpha, beta, C, ldc, scratch(Slot::Vec, size_t(4 * kSeg)), split};
    fn(j, o0, o1);
  });
}

}  // namespace builtin
}  // namespace fused_lora
