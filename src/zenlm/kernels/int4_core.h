// The int4 kernel's inner routines, used by zenlm::int4_linear (int4_linear.cpp) and the
// fused decode step (fused_step.h), both in int4_linear.cpp's one translation unit.
#pragma once

// zenlm::int4_linear: y = x W^T with W in 4-bit groups of 32, for decoding on a CPU.
//
// Why a kernel of our own: at batch 1 a decode step is ~120 matrix-vector products, and
// the time goes to arithmetic, not to memory: unpacking nibbles and applying a scale per
// group of 32 weights costs more instructions than reading the bytes takes. This kernel
// quantizes the activations to int8 in blocks of 32 (as llama.cpp does) and multiplies
// them by the 4-bit codes with AVX-512 VNNI (`vpdpbusd`: 64 multiply-adds). The layout
// puts 16 groups side by side, one per 32-bit lane, so that a group's 32 products add
// up in int32 inside its lane over 8 instructions, and scales are applied once per 16
// groups with no shuffling.
//
// A weight row of K inputs (K a multiple of 64) has G = K / 32 groups; w = code * scale
// + min within a group (scales and mins: (N, G) float16). Its codes, K / 2 bytes:
//   - "chunks" of 16 groups (256 bytes each): 4 blocks of 64 bytes; in block j, byte
//     4 * l + t holds group l's input 8j + t in its low nibble and input 8j + 4 + t in
//     its high nibble (l < 16, t < 4);
//   - then the remaining groups two by two ("pairs", 32 bytes): byte i holds the first
//     group's input i in its low nibble and the second group's input i in its high one.
// Activations are rearranged the same way when they are quantized (`x_position`).
//
// A group's product is scale_w * scale_x * sum(code * q_x) + min_w * scale_x * sum(q_x):
// exactly the dequantized weights times the quantized activations, as llama.cpp's
// Q4_1 x Q8_1 computes it. (With the exact float sum of x in the second term instead,
// the rounding errors of x are weighted by w - min_w rather than by w, which are
// larger: int4 decoding's perplexity was +4.57% of float32's instead of +1.97%.)
//
// Each build has one of three paths, chosen by the flags it is compiled with (build.py
// compiles one library per CPU level and loads the one this CPU runs at):
//   - AVX-512 VNNI: the above, 16 groups per 512-bit vector;
//   - AVX2 (+ FMA, F16C): the same layout read as two 256-bit halves of 8 groups each,
//     with `vpmaddubsw` + `vpmaddwd` doing the 4-products-per-lane step that `vpdpbusd`
//     does on AVX-512, as llama.cpp's Q4_1 x Q8_1 does on AVX2;
// A CPU with neither uses PyTorch's own int4 kernel instead (zenlm/quant/weights.py).

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define ZENLM_AVX512 1
#define ZENLM_AVX2 0
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define ZENLM_AVX512 0
#define ZENLM_AVX2 1
#else
#error "zenlm::int4_linear needs AVX2 + FMA + F16C or AVX-512 VNNI (build.py says which flags)"
#endif
#include <immintrin.h>

namespace {

constexpr int64_t kGroup = 32;   // inputs per scale, for weights and activations alike
constexpr int64_t kLanes = 16;   // groups per chunk: one per 32-bit lane of a vector
constexpr int64_t kChunkInputs = kGroup * kLanes;  // 512

// Where input k of group g of a row of K inputs sits in the rearranged activation codes.
inline int64_t x_position(int64_t K, int64_t g, int64_t k) {
  const int64_t chunk = g / kLanes;
  if (chunk < K / kChunkInputs) {  // slice k / 4 of the chunk, lane g % 16, byte k % 4
    return chunk * kChunkInputs + (k / 4) * 64 + (g % kLanes) * 4 + k % 4;
  }
  return g * kGroup + k;  // pairs: in input order
}

// One activation row in int8 blocks: rearranged codes, and per block its scale and the
// sum of its dequantized codes (scale * sum of codes).
struct QuantizedRow {
  const int8_t* codes;  // (K), see x_position
  const float* scales;  // (G)
  const float* sums;    // (G)
};

// One block of 32 activations as int8 codes in input order: code = round-half-even(x /
// scale) with scale = max|x| / 127 (0 for an all-zero block). Returns the scale; `total`
// gets the codes' sum. Vectorized as llama.cpp's quantize_row_q8_1 is (the same roundings
// as std::nearbyint under the default rounding mode): on AVX2 this step was ~4% of a
// decode step's time in plain loops.
inline float quantize_block(const float* block, int8_t* codes, int32_t& total) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  __m256 v[4], amax = _mm256_setzero_ps();
  for (int i = 0; i < 4; ++i) {
    v[i] = _mm256_loadu_ps(block + 8 * i);
    amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[i]));
  }
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  const float scale = _mm_cvtss_f32(m) / 127.f;
  const __m256 inverse = _mm256_set1_ps(scale > 0.f ? 1.f / scale : 0.f);
  __m256i q[4];
  for (int i = 0; i < 4; ++i) q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], inverse));
  const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
  __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
  s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
  total = _mm_cvtsi128_si32(_mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1)));
  // The packs interleave 128-bit lanes; the permutation restores input order.
  const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]),
                                           _mm256_packs_epi32(q[2], q[3]));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes),
                      _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  return scale;
}

// Activation rows [m0, m1) of x (M, K) into codes (M, K), scales and sums (M, G). The one
// activation quantization of zenlm::int4_linear and the fused decode step (both through
// int4_matmul): the same floats in give the same codes out.
void quantize_rows(const float* x, int64_t m0, int64_t m1, int64_t K, int8_t* codes,
                   float* scales, float* sums) {
  const int64_t groups = K / kGroup, chunk_groups = K / kChunkInputs * kLanes;
  alignas(32) int8_t ordered[kGroup];
  for (int64_t m = m0; m < m1; ++m) {
    int8_t* row = codes + m * K;
    for (int64_t g = 0; g < groups; ++g) {
      int32_t total = 0;
      const bool in_chunk = g < chunk_groups;
      const float scale = quantize_block(x + m * K + g * kGroup,
                                         in_chunk ? ordered : row + g * kGroup, total);
      if (in_chunk) {  // inputs 4u..4u+3 go to slice u of the chunk, lane g % 16
        for (int64_t u = 0; u < kGroup / 4; ++u) {
          std::memcpy(row + x_position(K, g, 4 * u), ordered + 4 * u, 4);
        }
      }
      scales[m * groups + g] = scale;
      sums[m * groups + g] = scale * static_cast<float>(total);
    }
  }
}

#if ZENLM_AVX512

// The sums of the 16 lanes of a, b, c and d, as one vector of 4 (a shared tree of
// shuffles and adds instead of four separate reductions).
inline __m128 sum_lanes(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  // Each 128-bit lane now holds partial sums of a, b, c, d in that order.
  const __m512 abcd = _mm512_add_ps(
      _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))),
      _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))));
  const __m256 half = _mm256_add_ps(_mm512_castps512_ps256(abcd),
                                    _mm512_extractf32x8_ps(abcd, 1));
  return _mm_add_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps(half, 1));
}

// RW weight rows (consecutive, K / 2 codes and G scales apart) times RX activation rows,
// into out[i + j * out_stride]. Independent rows keep the vector units busy while codes
// stream in from memory.
template <int RW, int RX>
void dot_tile(const uint8_t* codes, const c10::Half* scales, const c10::Half* mins,
              const QuantizedRow* rows, int64_t K, float* out, int64_t out_stride) {
  const int64_t groups = K / kGroup, chunks = K / kChunkInputs;
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  __m512 acc[RW][RX];
  for (int i = 0; i < RW; ++i)
    for (int j = 0; j < RX; ++j) acc[i][j] = _mm512_setzero_ps();

  // Chunks: 16 groups, one per lane; their int32 sums need no shuffling.
  for (int64_t c = 0; c < chunks; ++c) {
    __m512i sums[RW][RX];
    for (int i = 0; i < RW; ++i)
      for (int j = 0; j < RX; ++j) sums[i][j] = _mm512_setzero_si512();
    for (int64_t block = 0; block < 4; ++block) {
      __m512i x_low[RX], x_high[RX];
      for (int j = 0; j < RX; ++j) {
        const int8_t* x = rows[j].codes + c * kChunkInputs + block * 128;
        x_low[j] = _mm512_loadu_si512(x);
        x_high[j] = _mm512_loadu_si512(x + 64);
      }
      for (int i = 0; i < RW; ++i) {
        const __m512i packed = _mm512_loadu_si512(codes + i * (K / 2) + c * 256 + block * 64);
        const __m512i low = _mm512_and_si512(packed, nibble);
        const __m512i high = _mm512_and_si512(_mm512_srli_epi16(packed, 4), nibble);
        for (int j = 0; j < RX; ++j) {
          sums[i][j] = _mm512_dpbusd_epi32(sums[i][j], low, x_low[j]);
          sums[i][j] = _mm512_dpbusd_epi32(sums[i][j], high, x_high[j]);
        }
      }
    }
    for (int i = 0; i < RW; ++i) {
      const int64_t at = i * groups + c * kLanes;
      const __m512 w_scale = _mm512_cvtph_ps(_mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(scales + at)));
      const __m512 w_min = _mm512_cvtph_ps(_mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(mins + at)));
      for (int j = 0; j < RX; ++j) {
        const __m512 x_scale = _mm512_loadu_ps(rows[j].scales + c * kLanes);
        const __m512 x_sum = _mm512_loadu_ps(rows[j].sums + c * kLanes);
        acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums[i][j]),
                                    _mm512_mul_ps(w_scale, x_scale), acc[i][j]);
        acc[i][j] = _mm512_fmadd_ps(w_min, x_sum, acc[i][j]);
      }
    }
  }

  // Pairs: two groups per 512-bit product, lanes 0-7 the first's, 8-15 the second's.
  const __m512i spread = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  for (int64_t g = chunks * kLanes; g < groups; g += 2) {
    __m512i x[RX];
    __m512 x_scale[RX], x_sum[RX];
    for (int j = 0; j < RX; ++j) {
      x[j] = _mm512_loadu_si512(rows[j].codes + g * kGroup);
      x_scale[j] = _mm512_permutexvar_ps(spread, _mm512_maskz_loadu_ps(0x3, rows[j].scales + g));
      x_sum[j] = _mm512_maskz_loadu_ps(0x3, rows[j].sums + g);
    }
    for (int i = 0; i < RW; ++i) {
      const __m256i packed = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(codes + i * (K / 2) + g / 2 * kGroup));
      const __m256i low = _mm256_and_si256(packed, _mm512_castsi512_si256(nibble));
      const __m256i high =
          _mm256_and_si256(_mm256_srli_epi16(packed, 4), _mm512_castsi512_si256(nibble));
      const __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1);
      const int64_t at = i * groups + g;
      const __m512 w_scale = _mm512_permutexvar_ps(
          spread, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(0x3, scales + at)));
      const __m512 w_min = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(0x3, mins + at));
      for (int j = 0; j < RX; ++j) {
        const __m512i sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, x[j]);
        acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums),
                                    _mm512_mul_ps(w_scale, x_scale[j]), acc[i][j]);
        acc[i][j] = _mm512_fmadd_ps(w_min, x_sum[j], acc[i][j]);
      }
    }
  }
  for (int j = 0; j < RX; ++j) {
    if constexpr (RW == 4) {
      _mm_storeu_ps(out + j * out_stride, sum_lanes(acc[0][j], acc[1][j], acc[2][j], acc[3][j]));
    } else {
      for (int i = 0; i < RW; ++i) out[i + j * out_stride] = _mm512_reduce_add_ps(acc[i][j]);
    }
  }
}

#elif ZENLM_AVX2

// Products of 4-bit codes u (0..15) and int8 codes s (-127..127), summed in 16 bits:
// each `vpmaddubsw` lane is c0 x0 + c1 x1, at most 2 * 15 * 127 = 3810 in size, so a
// chunk-half's 8 of them (4 blocks x low and high nibbles) add up to at most 30480 and
// never overflow int16. One `vpmaddwd` per chunk-half then widens the sums to int32:
// 7 instructions per 64 multiply-adds instead of 9 with a widening after each.
inline __m256i dot2(__m256i acc16, __m256i u, __m256i s) {
  return _mm256_add_epi16(acc16, _mm256_maddubs_epi16(u, s));
}

inline __m256i widen(__m256i acc16) {  // int16 pairs -> int32 lanes (4 products each)
  return _mm256_madd_epi16(acc16, _mm256_set1_epi16(1));
}

inline float sum_lanes(__m256 v) {
  const __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 pair = _mm_add_ps(half, _mm_movehl_ps(half, half));
  return _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)));
}

inline __m256 load_halves(const c10::Half* p) {  // 8 float16 -> 8 float32
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// As the AVX-512 dot_tile, with each chunk's 64-byte blocks read as two halves of 8
// groups (bytes 0-31: groups 0-7, bytes 32-63: groups 8-15), one half at a time so
// that a tile's int32 sums, float accumulators and activations fit in 16 registers.
template <int RW, int RX>
void dot_tile(const uint8_t* codes, const c10::Half* scales, const c10::Half* mins,
              const QuantizedRow* rows, int64_t K, float* out, int64_t out_stride) {
  const int64_t groups = K / kGroup, chunks = K / kChunkInputs;
  const __m256i nibble = _mm256_set1_epi8(0x0F);
  __m256 acc[RW][RX];
  float tail[RW][RX];  // the pairs' min terms, one float per group
  for (int i = 0; i < RW; ++i)
    for (int j = 0; j < RX; ++j) acc[i][j] = _mm256_setzero_ps(), tail[i][j] = 0.f;

  for (int64_t c = 0; c < chunks; ++c) {
    for (int64_t h = 0; h < 2; ++h) {
      __m256i sums[RW][RX];
      for (int i = 0; i < RW; ++i)
        for (int j = 0; j < RX; ++j) sums[i][j] = _mm256_setzero_si256();
      // Not unrolled: unrolled, GCC regroups the 16-bit sums of all four blocks into
      // a tree and spills the products to the stack (48 stores a chunk-half for the
      // 3 x 2 tile); rolled, the sums stay in registers. Measured on a Zen 3 (AVX2
      // only): a SmolLM2 layer's matmuls at 512 rows from 31 to 25 ms.
#pragma GCC unroll 1
      for (int64_t block = 0; block < 4; ++block) {
        __m256i x_low[RX], x_high[RX];
        for (int j = 0; j < RX; ++j) {
          const int8_t* x = rows[j].codes + c * kChunkInputs + block * 128 + h * 32;
          x_low[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
          x_high[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 64));
        }
        for (int i = 0; i < RW; ++i) {
          const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(
              codes + i * (K / 2) + c * 256 + block * 64 + h * 32));
          const __m256i low = _mm256_and_si256(packed, nibble);
          const __m256i high = _mm256_and_si256(_mm256_srli_epi16(packed, 4), nibble);
          for (int j = 0; j < RX; ++j) {
            sums[i][j] = dot2(sums[i][j], low, x_low[j]);
            sums[i][j] = dot2(sums[i][j], high, x_high[j]);
          }
        }
      }
      const int64_t lane0 = c * kLanes + h * 8;
      for (int i = 0; i < RW; ++i) {
        const __m256 w_scale = load_halves(scales + i * groups + lane0);
        const __m256 w_min = load_halves(mins + i * groups + lane0);
        for (int j = 0; j < RX; ++j) {
          const __m256 x_scale = _mm256_loadu_ps(rows[j].scales + lane0);
          const __m256 x_sum = _mm256_loadu_ps(rows[j].sums + lane0);
          acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(widen(sums[i][j])),
                                      _mm256_mul_ps(w_scale, x_scale), acc[i][j]);
          acc[i][j] = _mm256_fmadd_ps(w_min, x_sum, acc[i][j]);
        }
      }
    }
  }

  // Pairs: the low nibbles are group g's 32 codes in input order, the high ones g + 1's.
  for (int64_t g = chunks * kLanes; g < groups; g += 2) {
    __m256i x0[RX], x1[RX];
    for (int j = 0; j < RX; ++j) {
      x0[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[j].codes + g * kGroup));
      x1[j] = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(rows[j].codes + (g + 1) * kGroup));
    }
    for (int i = 0; i < RW; ++i) {
      const __m256i packed = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(codes + i * (K / 2) + g / 2 * kGroup));
      const __m256i low = _mm256_and_si256(packed, nibble);
      const __m256i high = _mm256_and_si256(_mm256_srli_epi16(packed, 4), nibble);
      const int64_t at = i * groups + g;
      const float s0 = scales[at], s1 = scales[at + 1], z0 = mins[at], z1 = mins[at + 1];
      for (int j = 0; j < RX; ++j) {
        const __m256i zero = _mm256_setzero_si256();
        acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(widen(dot2(zero, low, x0[j]))),
                                    _mm256_set1_ps(s0 * rows[j].scales[g]), acc[i][j]);
        acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(widen(dot2(zero, high, x1[j]))),
                                    _mm256_set1_ps(s1 * rows[j].scales[g + 1]), acc[i][j]);
        tail[i][j] += z0 * rows[j].sums[g] + z1 * rows[j].sums[g + 1];
      }
    }
  }
  for (int i = 0; i < RW; ++i)
    for (int j = 0; j < RX; ++j) out[i + j * out_stride] = sum_lanes(acc[i][j]) + tail[i][j];
}

#endif

// Measured: 1, 2, 4 and 8 tiles of 4 rows, 4 fastest. For AVX2's one-row decode tiles
// (Zen 3): 4, 8 and 16 rows ahead within noise of each other, no prefetch 20% slower.
constexpr int64_t kTilesAhead = 4;

// Bring `bytes` from `start` towards the cache (a hint; no effect on results).
inline void prefetch(const void* start, int64_t bytes) {
  const char* p = static_cast<const char*>(start);
  for (int64_t line = 0; line < bytes; line += 64) __builtin_prefetch(p + line, 0, 3);
}

// Weight rows [n0, n1) against activation rows [m0, m1), in tiles of RW weight rows x
// RX activation rows: a tile's codes, read once from memory, serve all its activation rows.
template <int RW, int RX>
void weight_tiles(const uint8_t* codes, const c10::Half* scales, const c10::Half* mins,
                  const std::vector<QuantizedRow>& rows, int64_t K, int64_t N, int64_t n0,
                  int64_t n1, int64_t m0, int64_t m1, float* out) {
  const int64_t groups = K / kGroup;
  auto tile = [&](int64_t n, int64_t m, auto rw, auto rx) {
    dot_tile<decltype(rw)::value, decltype(rx)::value>(
        codes + n * (K / 2), scales + n * groups, mins + n * groups, rows.data() + m, K,
        out + m * N + n, N);
  };
  using One = std::integral_constant<int, 1>;
  using Rows = std::integral_constant<int, RW>;
  using Cols = std::integral_constant<int, RX>;
  int64_t n = n0;
  for (; n + RW <= n1; n += RW) {
    // Ask for the weights a few tiles ahead: the interleaved reads of a tile of several
    // rows do not look like one stream to the hardware prefetcher, which then leaves
    // most of the memory bandwidth unused (2.6 ms against 4.5 ms for a decode step's
    // matmuls); with one row a tile, each row's reads still start sooner.
    const int64_t ahead = n + kTilesAhead * RW;
    if (ahead + RW <= n1) {
      prefetch(codes + ahead * (K / 2), RW * K / 2);
      prefetch(scales + ahead * groups, RW * groups * sizeof(c10::Half));
      prefetch(mins + ahead * groups, RW * groups * sizeof(c10::Half));
    }
    int64_t m = m0;
    for (; m + RX <= m1; m += RX) tile(n, m, Rows{}, Cols{});
    for (; m < m1; ++m) tile(n, m, Rows{}, One{});
  }
  for (; n < n1; ++n) {
    int64_t m = m0;
    for (; m + RX <= m1; m += RX) tile(n, m, One{}, Cols{});
    for (; m < m1; ++m) tile(n, m, One{}, One{});
  }
}

// A decode's tiles (fewer than 4 activation rows): on AVX2, one weight row at a time, so
// that the weights are read in memory order, one stream. On a Zen 3 (AVX2 only) the 1.1B
// shape's int4 matmuls at one row took 42-54 ms a token that way against 74-103 ms in
// tiles of 4 interleaved rows, and 88-90 in tiles of 2 (benchmarks/int4_decode_stream.py,
// variants alternated over 3 rounds). AVX-512 keeps 4 rows: measured so on a Zen 4,
// where one row at a time has not been tried.
constexpr int kDecodeTileWeights = ZENLM_AVX512 ? 4 : 1;

constexpr int64_t kRowsPerPass = 32;
// A prompt's tiles, weight rows x activation rows: AVX-512 has 32 vector registers,
// AVX2 16. On AVX2, 3 x 2 was 4-9% faster than 2 x 2 at 512 rows (benchmarks/
// int4_prompt.py, forced AVX2; 4 x 2 equal to 2 x 2, 2 x 4 15% slower).
constexpr int kPromptTileWeights = ZENLM_AVX512 ? 2 : 3;
constexpr int kPromptTileRows = ZENLM_AVX512 ? 4 : 2;

// Weight rows [n0, n1) against all M activation rows.
template <int RW, int RX>
void weight_rows(const uint8_t* codes, const c10::Half* scales, const c10::Half* mins,
                 const std::vector<QuantizedRow>& rows, int64_t K, int64_t N, int64_t n0,
                 int64_t n1, float* out) {
  const int64_t M = static_cast<int64_t>(rows.size());
  // A prefill's activation rows, 32 at a time (~18-48 KB of codes, kept near the core
  // while every weight tile passes): 150-166 GMAC/s against 121-141 for all rows at once.
  for (int64_t m0 = 0; m0 < M; m0 += kRowsPerPass) {
    weight_tiles<RW, RX>(codes, scales, mins, rows, K, N, n0, n1, m0,
                         std::min(M, m0 + kRowsPerPass), out);
  }
}

// Checks a weight of K inputs: codes (N, K / 2) uint8, scales and mins (N, K / 32) float16.
void check_weight(const char* op, int64_t K, const at::Tensor& codes, const at::Tensor& scales,
                  const at::Tensor& mins) {
  TORCH_CHECK(K % 64 == 0, op, ": K (", K, ") must be a multiple of 64");
  TORCH_CHECK(codes.dim() == 2 && codes.scalar_type() == at::kByte && codes.is_contiguous() &&
                  codes.size(1) == K / 2,
              op, ": codes must be contiguous uint8 (N, K / 2) with K / 2 = ", K / 2, ", got ",
              codes.sizes(), " ", codes.scalar_type());
  const int64_t N = codes.size(0);
  for (const at::Tensor* t : {&scales, &mins}) {
    TORCH_CHECK(t->dim() == 2 && t->scalar_type() == at::kHalf && t->is_contiguous() &&
                    t->size(0) == N && t->size(1) == K / kGroup,
                op, ": scales and mins must be contiguous float16 (N, K / 32) = (", N, ", ",
                K / kGroup, "), got ", t->sizes(), " ", t->scalar_type());
  }
}

void check_inputs(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales,
                  const at::Tensor& mins) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(),
              "int4_linear: x must be a contiguous float32 (M, K) tensor, got ", x.sizes(),
              " ", x.scalar_type());
  check_weight("int4_linear", x.size(1), codes, scales, mins);
}

// One group's 32 codes (input order) as code * scale + low, in bfloat16 or float32.
template <typename T>
inline void dequantize_group(const uint8_t* codes, float scale, float low, T* out) {
#if ZENLM_AVX512 && defined(__AVX512BF16__)
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    const __m512 s = _mm512_set1_ps(scale), z = _mm512_set1_ps(low);
    for (int64_t half = 0; half < 2; ++half) {
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + 16 * half));
      const __m512 w = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes)), s, z);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 16 * half),
                          reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(w)));
    }
    return;
  }
#endif
  if constexpr (std::is_same_v<T, float>) {  // rounded product, then sum: as Int4Linear.rows
    const __m256 s = _mm256_set1_ps(scale), z = _mm256_set1_ps(low);
    for (int64_t eighth = 0; eighth < 4; ++eighth) {
      const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + 8 * eighth));
      const __m256 w = _mm256_add_ps(
          _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes)), s), z);
      _mm256_storeu_ps(out + 8 * eighth, w);
    }
    return;
  }
  for (int64_t k = 0; k < kGroup; ++k) {  // bfloat16 without AVX512-BF16
    out[k] = static_cast<float>(codes[k]) * scale + low;
  }
}

// Weight rows [n0, n1) as code * scale + min, in input order, into out (N, K).
// Each chunk's or pair's codes are first put in input order (the layout above), then
// converted a group at a time.
template <typename T>
void dequantize_rows(const uint8_t* codes, const c10::Half* scales, const c10::Half* mins,
                     int64_t K, int64_t n0, int64_t n1, T* out) {
  const int64_t groups = K / kGroup, chunk_groups = K / kChunkInputs * kLanes;
  uint8_t ordered[kChunkInputs];
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = codes + n * K / 2;
    const c10::Half* s = scales + n * groups;
    const c10::Half* z = mins + n * groups;
    T* o = out + n * K;
    for (int64_t g0 = 0; g0 < chunk_groups; g0 += kLanes) {
      const uint8_t* chunk = row + g0 / kLanes * 256;
      for (int64_t j = 0; j < 4; ++j) {  // byte 64 j + 4 l + t: group l, inputs 8j + t, 8j + 4 + t
        for (int64_t l = 0; l < kLanes; ++l) {
          for (int64_t t = 0; t < 4; ++t) {
            const uint8_t b = chunk[j * 64 + l * 4 + t];
            ordered[l * kGroup + 8 * j + t] = b & 0x0F;
            ordered[l * kGroup + 8 * j + 4 + t] = b >> 4;
          }
        }
      }
      for (int64_t l = 0; l < kLanes; ++l) {
        dequantize_group(ordered + l * kGroup, s[g0 + l], z[g0 + l], o + (g0 + l) * kGroup);
      }
    }
    for (int64_t g = chunk_groups; g < groups; g += 2) {  // pairs: byte k, groups g, g + 1
      const uint8_t* bytes = row + g / 2 * kGroup;
      for (int64_t k = 0; k < kGroup; ++k) {
        ordered[k] = bytes[k] & 0x0F;
        ordered[kGroup + k] = bytes[k] >> 4;
      }
      dequantize_group(ordered, s[g], z[g], o + g * kGroup);
      dequantize_group(ordered + kGroup, s[g + 1], z[g + 1], o + (g + 1) * kGroup);
    }
  }
}


// y (M, N) = x (M, K) W^T for one int4 weight: the activations are quantized to int8
// blocks into `buffers` (reused across calls: a decode step makes ~120 of them, each
// too short to pay for fresh allocations), then every weight row is multiplied, in
// tasks of at least 16 weight rows across torch's threads (smaller ones cost more to
// hand out than to compute).
struct ActivationBuffers {
  std::vector<int8_t> codes;
  std::vector<float> scales, sums;
  std::vector<QuantizedRow> rows;
};

void int4_matmul(const float* x, int64_t M, int64_t K, const uint8_t* codes,
                 const c10::Half* scales, const c10::Half* mins, int64_t N, float* out,
                 ActivationBuffers& buffers) {
  const int64_t groups = K / kGroup;
  buffers.codes.resize(M * K);
  buffers.scales.resize(M * groups);
  buffers.sums.resize(M * groups);
  buffers.rows.resize(M);
  int8_t* x_codes = buffers.codes.data();
  float* x_scales = buffers.scales.data();
  float* x_sums = buffers.sums.data();
  at::parallel_for(0, M, 64, [&](int64_t m0, int64_t m1) {  // inline when M <= 64
    quantize_rows(x, m0, m1, K, x_codes, x_scales, x_sums);
  });
  for (int64_t m = 0; m < M; ++m) {
    buffers.rows[m] = {x_codes + m * K, x_scales + m * groups, x_sums + m * groups};
  }
  const auto& rows = buffers.rows;
  at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
    if (M < 4) {
      weight_rows<kDecodeTileWeights, 1>(codes, scales, mins, rows, K, N, n0, n1, out);
    } else {
      weight_rows<kPromptTileWeights, kPromptTileRows>(codes, scales, mins, rows, K, N, n0, n1,
                                                       out);
    }
  });
}

}  // namespace
