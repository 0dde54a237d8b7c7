// zenlm::int4_decode_step: one decode step of a whole int4 Llama-family decoder in one call.
//
// Why: at batch 1 the int4 matmuls of a SmolLM2-135M step take ~6 ms, and the ~20 small
// eager ops around them per layer (norms, RoPE, cache writes, attention, SiLU, residuals)
// took ~4.7 ms more in Python and PyTorch's dispatch. Here each of them is a loop over a
// few hundred floats (or one PyTorch call where only PyTorch's kernel gives its exact
// result), between the int4 kernel's own matmuls (int4_core.h's `int4_matmul`, the very
// routine, activation quantization included, that zenlm::int4_linear runs).
//
// The step, for B rows that all hold `position` tokens in the cache, token ids (B):
//   x = embedding rows (the int4 table, dequantized as Int4Linear.rows does)
//   per layer: h = rmsnorm(x) w_attn; qkv = h Wqkv^T; RoPE on q and k at `position`
//     (rotate-half layout); k, v written to slot `position` of the layer's cache;
//     each query head attends to slots 0..position of its KV head (scores x scale,
//     softmax in float32); x += attn Wo^T; h = rmsnorm(x) w_mlp; [g, u] = h Wgu^T;
//     x += (silu(g) * u) Wdown^T
//   logits = (rmsnorm(x) w_final) Whead^T
// which is what DecoderLM's eager forward computes for such a model, to the bit (zenlm/
// quant/fused_step.py decides which models and calls qualify; the rest decode as before).

// Included by int4_linear.cpp (one translation unit: torch's headers, which take most of
// a build's time, are parsed once), which registers the op.
#pragma once

#include <ATen/ops/_softmax.h>
#include <ATen/ops/cos.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/sin.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "int4_core.h"

namespace {

// One int4 weight's pointers and shape (codes (N, K / 2), scales and mins (N, K / 32)).
struct Int4Weight {
  const uint8_t* codes;
  const c10::Half* scales;
  const c10::Half* mins;
  int64_t N, K;
};

Int4Weight int4_weight(at::TensorList w, int64_t at, int64_t K, int64_t N, const char* what) {
  const at::Tensor& codes = w[at];
  check_weight(what, K, codes, w[at + 1], w[at + 2]);
  TORCH_CHECK(codes.size(0) == N, what, ": expected ", N, " output rows, got ", codes.size(0));
  return {codes.data_ptr<uint8_t>(), w[at + 1].data_ptr<c10::Half>(),
          w[at + 2].data_ptr<c10::Half>(), N, K};
}

const float* norm_weight(at::TensorList w, int64_t at, int64_t d, const char* what) {
  const at::Tensor& t = w[at];
  TORCH_CHECK(t.dim() == 1 && t.size(0) == d && t.scalar_type() == at::kFloat &&
                  t.is_contiguous(),
              what, ": norm weight must be contiguous float32 (", d, "), got ", t.sizes(), " ",
              t.scalar_type());
  return t.data_ptr<float>();
}

// The eager forward's float operations, to the bit. The int4 kernel rounds activations to
// int8 codes, so a difference of one ulp before a rounding can move a code; the move then
// grows over the layers (and through the KV cache over the steps) into a ~1-5% difference
// of the logits, enough to change greedy replies. So each operation here computes what
// the eager forward's PyTorch kernel computes, in the same order, with no fused
// multiply-adds (build.py compiles with -ffp-contract=off); cos, sin and the attention's
// softmax are PyTorch's own calls, its matmuls ours where checked equal to torch.bmm's
// (see `attention`).

// The sum of x[i]^2 over one row of d as ATen's CPU sum reduces a contiguous row
// (SumKernel.cpp: vectors of 8 floats, as torch's reduction kernels are built for AVX2
// on x86 even at its AVX-512 level; 4 interleaved partial sums, each a cascade of 4
// levels of 2^p vectors; then the scalar tail, then the 8 lanes in order).
float sum_of_squares(const float* x, int64_t d) {
  constexpr int64_t kLanesF = 8, kIlp = 4, kLevels = 4;
  const int64_t vectors = d / kLanesF, size = vectors / kIlp;
  auto square = [&](int64_t vector, int64_t lane) {
    const float v = x[vector * kLanesF + lane];
    return v * v;
  };
  int64_t ceil_log2 = 1;  // ATen's utils::CeilLog2: 1 for size <= 2
  if (size > 2) ceil_log2 = 64 - __builtin_clzll(static_cast<uint64_t>(size - 1));
  const int64_t power = std::max<int64_t>(4, ceil_log2 / kLevels);
  const int64_t step = int64_t{1} << power, mask = step - 1;
  float acc[kLevels][kIlp][kLanesF] = {};
  auto add_row = [&](int64_t i) {  // row i: vectors kIlp * i .. kIlp * i + 3 into acc[0]
    for (int64_t k = 0; k < kIlp; ++k)
      for (int64_t l = 0; l < kLanesF; ++l) acc[0][k][l] += square(kIlp * i + k, l);
  };
  int64_t i = 0;
  for (; i + step <= size;) {
    for (int64_t j = 0; j < step; ++j, ++i) add_row(i);
    for (int64_t j = 1; j < kLevels; ++j) {
      for (int64_t k = 0; k < kIlp; ++k)
        for (int64_t l = 0; l < kLanesF; ++l) acc[j][k][l] += acc[j - 1][k][l], acc[j - 1][k][l] = 0.f;
      if ((i & (mask << (j * power))) != 0) break;
    }
  }
  for (; i < size; ++i) add_row(i);
  for (int64_t j = 1; j < kLevels; ++j)
    for (int64_t k = 0; k < kIlp; ++k)
      for (int64_t l = 0; l < kLanesF; ++l) acc[0][k][l] += acc[j][k][l];
  float* partial = acc[0][0];
  for (int64_t v = size * kIlp; v < vectors; ++v)
    for (int64_t l = 0; l < kLanesF; ++l) partial[l] += square(v, l);
  for (int64_t k = 1; k < kIlp; ++k)
    for (int64_t l = 0; l < kLanesF; ++l) partial[l] += acc[0][k][l];
  float total = 0.f;
  for (int64_t t = vectors * kLanesF; t < d; ++t) total += x[t] * x[t];
  for (int64_t l = 0; l < kLanesF; ++l) total += partial[l];
  return total;
}

// out = x * r * w with r = 1 / sqrt(mean(x^2) + eps) over one row of d, as F.rms_norm's
// CPU composite (pow, mean = sum / d, add_, rsqrt, mul, mul).
void rms_norm(const float* x, const float* w, int64_t d, float eps, float* out) {
  const float r = 1.f / std::sqrt(sum_of_squares(x, d) / static_cast<float>(d) + eps);
#pragma omp simd
  for (int64_t i = 0; i < d; ++i) out[i] = x[i] * r * w[i];
}

// Rotate-half RoPE of one head of D in place: x * cos + rotate_half(x) * sin, each
// product rounded, as apply_rope's three elementwise ops.
void rotate(float* x, const float* cos, const float* sin, int64_t D) {
  const int64_t half = D / 2;
#pragma omp simd
  for (int64_t i = 0; i < half; ++i) {
    const float a = x[i], b = x[i + half];
    x[i] = a * cos[i] - b * sin[i];
    x[i + half] = b * cos[i + half] + a * sin[i + half];
  }
}

struct Shape {
  int64_t B, d, H, Hkv, D, ff, S, max_len;
};

// Layer `layer`'s keys or values of row b, KV head g: (max_len, D) floats.
float* cache_head(const at::Tensor& cache, const Shape& s, int64_t b, int64_t g) {
  return cache.data_ptr<float>() + ((b * s.Hkv + g) * s.max_len) * s.D;
}

void check_cache(const at::Tensor& t, const Shape& s, const char* what) {
  TORCH_CHECK(t.dim() == 4 && t.scalar_type() == at::kFloat && t.is_contiguous() &&
                  t.size(0) == s.B && t.size(1) == s.Hkv && t.size(3) == s.D,
              "int4_decode_step: ", what, " must be contiguous float32 (", s.B, ", ", s.Hkv,
              ", max_len, ", s.D, "), got ", t.sizes(), " ", t.scalar_type());
  TORCH_CHECK(t.size(2) == s.max_len && s.S <= s.max_len, "int4_decode_step: ", what,
              " hold ", t.size(2), " slots; position ", s.S - 1, " needs ", s.S);
}

// cos and sin (B, 1, 1, D) of `position`'s angles, as RotaryEmbedding makes them: float32
// products of the position and inv_freq, repeated for the two halves, then PyTorch's cos
// and sin of the same (B, 1, 1, D) tensor (its vectorized ones; std::cos differs by an ulp
// at some angles), times the attention factor.
struct RopeTables {
  at::Tensor cos, sin;
};

RopeTables rope_tables(const at::Tensor& inv_freq, int64_t position, double factor, int64_t B,
                       int64_t D) {
  at::Tensor angles = at::empty({B, 1, 1, D}, inv_freq.options());
  float* a = angles.data_ptr<float>();
  const float* freq = inv_freq.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < D / 2; ++i) {
      a[b * D + i] = a[b * D + i + D / 2] = static_cast<float>(position) * freq[i];
    }
  }
  if (factor == 1.0) return {at::cos(angles), at::sin(angles)};  // x * 1 is x
  return {at::mul(at::cos(angles), factor), at::mul(at::sin(angles), factor)};
}

// The two batched matmuls of small_query_attention, each of `batch` items (a row's KV
// head): scores (batch, group, S) = q (batch, group, D) k^T and out (batch, group, D) =
// p (batch, group, S) v, with k and v the cache's slots (D floats apart, items `stride`
// apart). PyTorch computes them with torch.bmm (MKL's sgemm, or its own loop when
// D * group * S < 400), whose order of sums is the library's; `*_torch` call it on the views
// torch.matmul makes, `*_own` repeat the order measured on this CPU and library (see
// `own_matmuls_match`), which is 2-4x faster than calling bmm for a decode step's sizes.
struct AttentionShape {
  int64_t batch, group, S, D, stride;
};

// Multiply-adds of attention rows below which one thread does them all (~20 us of work:
// more than a thread hand-off costs).
constexpr int64_t kRowsWorkPerThread = 1 << 16;

void qk_torch(const float* q, const float* keys, const AttentionShape& a, float* scores) {
  const auto o = at::TensorOptions().dtype(at::kFloat);
  at::Tensor out = at::from_blob(scores, {a.batch, a.group, a.S}, o);
  at::bmm_out(out, at::from_blob(const_cast<float*>(q), {a.batch, a.group, a.D}, o),
              at::from_blob(const_cast<float*>(keys), {a.batch, a.D, a.S}, {a.stride, 1, a.D}, o));
}

void pv_torch(const float* probs, const float* values, const AttentionShape& a, float* out) {
  const auto o = at::TensorOptions().dtype(at::kFloat);
  at::Tensor result = at::from_blob(out, {a.batch, a.group, a.D}, o);
  at::bmm_out(result, at::from_blob(const_cast<float*>(probs), {a.batch, a.group, a.S}, o),
              at::from_blob(const_cast<float*>(values), {a.batch, a.S, a.D}, {a.stride, a.D, 1}, o));
}

// Dot product of a and b (n) as `kParts` interleaved partial sums (element i into part
// i % kParts; each product rounded, then added), folded in halves: part j + kParts / 2
// into part j, and so on.
template <int kParts>
inline float dot_parts(const float* a, const float* b, int64_t n) {
  float part[kParts] = {};
  for (int64_t i = 0; i < n; i += kParts) {
    for (int j = 0; j < kParts && i + j < n; ++j) part[j] += a[i + j] * b[i + j];
  }
  for (int half = kParts / 2; half >= 1; half /= 2) {
    for (int j = 0; j < half; ++j) part[j] += part[j + half];
  }
  return part[0];
}

// Measured with MKL 2024.2 (torch 2.13) on an AMD EPYC (MKL's generic code path): a
// score in columns of four is 4 interleaved sums, one of the S % 4 last columns 8; the
// small products PyTorch multiplies itself (D * group * S < 400) one sum in order; p v
// always one sum in order over the slots.
//
// Both work on query rows [r0, r1) of the batch * group rows (row r: item r / group), each
// row's sums in the order above whichever thread computes it.
void qk_own(const float* q, const float* keys, const AttentionShape& a, float* scores,
            int64_t r0, int64_t r1) {
  const bool small = a.D * a.group * a.S < 400;
  const int64_t full = small || a.D % 4 != 0 ? 0 : a.S - a.S % 4;  // columns in fours
  for (int64_t r = r0; r < r1; ++r) {
    const float* k = keys + (r / a.group) * a.stride;
    const float* row = q + r * a.D;
    float* out = scores + r * a.S;
    // Two slots per vector: lanes 0-3 slot t's 4 partial sums, lanes 4-7 slot t + 1's.
    for (int64_t t = 0; t < full; t += 2) {
      __m256 acc = _mm256_setzero_ps();
      for (int64_t i = 0; i < a.D; i += 4) {
        const __m128 x = _mm_loadu_ps(row + i);
        const __m256 w = _mm256_insertf128_ps(
            _mm256_castps128_ps256(_mm_loadu_ps(k + t * a.D + i)), _mm_loadu_ps(k + (t + 1) * a.D + i), 1);
        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set_m128(x, x), w));
      }
      // (p0 + p2) + (p1 + p3) in each half
      acc = _mm256_add_ps(acc, _mm256_permute_ps(acc, 0x4E));
      acc = _mm256_add_ps(acc, _mm256_permute_ps(acc, 0xB1));
      out[t] = _mm256_cvtss_f32(acc);
      out[t + 1] = _mm_cvtss_f32(_mm256_extractf128_ps(acc, 1));
    }
    for (int64_t t = full; t < a.S; ++t) {
      out[t] = small ? dot_parts<1>(row, k + t * a.D, a.D) : dot_parts<8>(row, k + t * a.D, a.D);
    }
  }
}

// o[i0, i0 + 8 kVecs) of one query row: each output a sum over the slots in order
// (independent vectors in flight: the sums are a chain of dependent adds each).
template <int kVecs>
inline void pv_block(const float* p, const float* v, int64_t S, int64_t D, float* o) {
  __m256 acc[kVecs];
  for (int j = 0; j < kVecs; ++j) acc[j] = _mm256_setzero_ps();
  for (int64_t t = 0; t < S; ++t) {
    const __m256 pt = _mm256_set1_ps(p[t]);
    for (int j = 0; j < kVecs; ++j) {
      acc[j] = _mm256_add_ps(acc[j], _mm256_mul_ps(pt, _mm256_loadu_ps(v + t * D + 8 * j)));
    }
  }
  for (int j = 0; j < kVecs; ++j) _mm256_storeu_ps(o + 8 * j, acc[j]);
}

void pv_own(const float* probs, const float* values, const AttentionShape& a, float* out,
            int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* v = values + (r / a.group) * a.stride;
    const float* p = probs + r * a.S;
    float* o = out + r * a.D;
    int64_t i = 0;
    for (; i + 64 <= a.D; i += 64) pv_block<8>(p, v + i, a.S, a.D, o + i);
    for (; i + 8 <= a.D; i += 8) pv_block<1>(p, v + i, a.S, a.D, o + i);
    for (; i < a.D; ++i) {
      float sum = 0.f;
      for (int64_t t = 0; t < a.S; ++t) sum += p[t] * v[t * a.D + i];
      o[i] = sum;
    }
  }
}

// Whether qk_own and pv_own give torch.bmm's results to the bit for this shape (random
// data, contexts of 1 to 2,049 slots), found once per (batch, group, D) in a process. Where
// they do not (another BLAS, another CPU path), the step calls torch.bmm: slower, as exact.
bool own_matmuls_match(int64_t batch, int64_t group, int64_t D) {
  static std::mutex mutex;
  static std::map<std::tuple<int64_t, int64_t, int64_t>, bool> known;
  const char* force = std::getenv("ZENLM_FUSED_ATTENTION");  // "torch": always call bmm
  if (force != nullptr && std::string(force) == "torch") return false;
  std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_tuple(batch, group, D);
  if (auto found = known.find(key); found != known.end()) return found->second;
  constexpr int64_t kSlots = 2049;
  std::vector<float> q(batch * group * D), kv(batch * kSlots * D), p(batch * group * kSlots);
  uint32_t state = 12345;
  auto fill = [&](std::vector<float>& v) {
    for (float& x : v) state = state * 1664525u + 1013904223u, x = (state >> 8) * 0x1p-23f - 1.f;
  };
  fill(q), fill(kv), fill(p);
  bool same = true;
  constexpr int64_t kContexts[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 17, 63, 64, 65, 66, 67, 100,
                                   255, 1027, kSlots};
  for (int64_t S : kContexts) {
    const AttentionShape a{batch, group, S, D, kSlots * D};
    std::vector<float> mine(batch * group * std::max(S, D)), theirs(mine.size());
    qk_own(q.data(), kv.data(), a, mine.data(), 0, batch * group);
    qk_torch(q.data(), kv.data(), a, theirs.data());
    same = same && std::memcmp(mine.data(), theirs.data(), batch * group * S * 4) == 0;
    pv_own(p.data(), kv.data(), a, mine.data(), 0, batch * group);
    pv_torch(p.data(), kv.data(), a, theirs.data());
    same = same && std::memcmp(mine.data(), theirs.data(), batch * group * D * 4) == 0;
  }
  known[key] = same;
  return same;
}

// softmax(q k^T x scale) v of every row's query heads (in `qkv`, (B, qkv_width)) over
// slots 0..S-1 of its KV head, into out (B, H * D), as small_query_attention computes it:
// the matmuls above, the scaling (one float product each) and PyTorch's own softmax. A
// matmul in another order would round differently, and the int8 codes downstream drift.
void attention(const float* qkv, const at::Tensor& keys, const at::Tensor& values,
               const Shape& s, double scale, float* out) {
  const int64_t group = s.H / s.Hkv, width = (s.H + 2 * s.Hkv) * s.D;
  const AttentionShape a{s.B * s.Hkv, group, s.S, s.D, s.max_len * s.D};
  thread_local std::vector<float> q, scores, probs;
  q.resize(s.B * s.H * s.D), scores.resize(a.batch * group * s.S), probs.resize(scores.size());
  for (int64_t b = 0; b < s.B; ++b) {  // (B, H, D): matmul's contiguous (B Hkv, group, D)
    std::memcpy(q.data() + b * s.H * s.D, qkv + b * width, s.H * s.D * sizeof(float));
  }
  const bool own = own_matmuls_match(a.batch, group, s.D);
  const float* k = keys.data_ptr<float>();
  const float* v = values.data_ptr<float>();
  // Rows split over threads once a context is long enough to pay for it (at 4,096 slots the
  // two matmuls cost about what the weights do); each row's sums keep their order.
  // (The lambdas take pointers: a thread_local named inside one is the worker's own.)
  const int64_t rows = a.batch * group;
  const int64_t grain = std::max<int64_t>(1, kRowsWorkPerThread / (s.S * s.D));
  const float* query = q.data();
  float* score = scores.data();
  const float* prob = probs.data();
  if (own) {
    at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
      qk_own(query, k, a, score, r0, r1);
    });
  } else {
    qk_torch(q.data(), k, a, scores.data());
  }
  const float factor = static_cast<float>(scale);  // `* scale`
  for (float& value : scores) value *= factor;
  const auto options = keys.options();
  at::Tensor prob_t = at::from_blob(probs.data(), {a.batch, group, s.S}, options);
  at::_softmax_out(prob_t, at::from_blob(scores.data(), {a.batch, group, s.S}, options), -1,
                   false);
  if (own) {
    at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
      pv_own(prob, v, a, out, r0, r1);
    });
  } else {
    pv_torch(probs.data(), v, a, out);
  }
}

// exp of 8 floats as PyTorch's vectorized SiLU computes it: SLEEF's expf (u10) with
// FMA, Sleef_expf8_u10 (2^n times a degree-6 polynomial of the remainder, scaled in two
// factors; 0 below -104, inf above 100). Checked bit for bit against F.silu over 4M
// floats; torch.exp itself differs at ~9% of them (another exp).
inline __m256 sleef_exp8(__m256 d) {
  const __m256i q = _mm256_cvtps_epi32(_mm256_mul_ps(d, _mm256_set1_ps(1.44269504088896341f)));
  const __m256 n = _mm256_cvtepi32_ps(q);
  __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693145751953125f), d);  // ln 2 in 2 parts
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(-1.428606765330187045e-06f), r);
  __m256 u = _mm256_set1_ps(0.000198527617612853646278381f);
  u = _mm256_fmadd_ps(u, r, _mm256_set1_ps(0.00139304355252534151077271f));
  u = _mm256_fmadd_ps(u, r, _mm256_set1_ps(0.00833336077630519866943359f));
  u = _mm256_fmadd_ps(u, r, _mm256_set1_ps(0.0416664853692054748535156f));
  u = _mm256_fmadd_ps(u, r, _mm256_set1_ps(0.166666671633720397949219f));
  u = _mm256_fmadd_ps(u, r, _mm256_set1_ps(0.5f));
  u = _mm256_add_ps(_mm256_set1_ps(1.f), _mm256_fmadd_ps(_mm256_mul_ps(r, r), u, r));
  const __m256i half = _mm256_srai_epi32(q, 1), rest = _mm256_sub_epi32(q, half);
  const __m256i bias = _mm256_set1_epi32(127);
  u = _mm256_mul_ps(
      _mm256_mul_ps(u, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, bias), 23))),
      _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(rest, bias), 23)));
  u = _mm256_andnot_ps(_mm256_cmp_ps(d, _mm256_set1_ps(-104.f), _CMP_LT_OQ), u);
  u = _mm256_blendv_ps(u, _mm256_set1_ps(INFINITY),
                       _mm256_cmp_ps(_mm256_set1_ps(100.f), d, _CMP_LT_OQ));
  return _mm256_or_ps(u, _mm256_cmp_ps(d, d, _CMP_UNORD_Q));  // NaN stays NaN
}

// hidden (B, ff) = silu(gate) * up of gate_up (B, 2 ff) = [gate, up], as F.silu(gate) * up:
// gate / (1 + exp(-gate)) rounded, then the product. ff is a multiple of 64 (the down
// projection's K), so PyTorch's SiLU has no scalar tail (std::exp) either.
void silu_times_up(const float* gate_up, int64_t B, int64_t ff, float* hidden) {
  const __m256 one = _mm256_set1_ps(1.f);
  for (int64_t b = 0; b < B; ++b) {
    const float* gate = gate_up + b * 2 * ff;
    const float* up = gate + ff;
    for (int64_t i = 0; i + 8 <= ff; i += 8) {
      const __m256 g = _mm256_loadu_ps(gate + i);
      const __m256 e = sleef_exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
      _mm256_storeu_ps(hidden + b * ff + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)),
                                                           _mm256_loadu_ps(up + i)));
    }
  }
}

constexpr int64_t kWeightsBefore = 7;  // embedding (3), final norm, head (3)
constexpr int64_t kWeightsPerLayer = 14;

at::Tensor int4_decode_step(const at::Tensor& ids, at::TensorList keys, at::TensorList values,
                            int64_t position, at::TensorList w, const at::Tensor& inv_freq,
                            double rope_factor, int64_t heads, int64_t kv_heads, double eps,
                            double scale) {
  const int64_t layers = static_cast<int64_t>(keys.size());
  TORCH_CHECK(ids.dim() == 1 && ids.scalar_type() == at::kLong && ids.is_contiguous(),
              "int4_decode_step: ids must be contiguous int64 (B), got ", ids.sizes());
  TORCH_CHECK(values.size() == keys.size() &&
                  static_cast<int64_t>(w.size()) == kWeightsBefore + kWeightsPerLayer * layers,
              "int4_decode_step: ", layers, " layers need as many value caches and ",
              kWeightsBefore + kWeightsPerLayer * layers, " weights, got ", values.size(),
              " and ", w.size());
  TORCH_CHECK(heads > 0 && kv_heads > 0 && heads % kv_heads == 0,
              "int4_decode_step: heads (", heads, ") must be a multiple of kv_heads (", kv_heads,
              ")");
  const int64_t D = 2 * inv_freq.size(0);
  const int64_t d = 2 * w[0].size(1);
  const int64_t ff = layers ? w[kWeightsBefore + 8].size(0) / 2 : 0;
  const Shape s{ids.size(0), d, heads, kv_heads, D, ff, position + 1,
                layers ? keys[0].size(2) : position + 1};
  TORCH_CHECK(inv_freq.scalar_type() == at::kFloat && inv_freq.is_contiguous() && D % 2 == 0,
              "int4_decode_step: inv_freq must be contiguous float32 (head_dim / 2)");
  TORCH_CHECK(position >= 0, "int4_decode_step: position must be >= 0, got ", position);
  const int64_t qkv_width = (heads + 2 * kv_heads) * D;
  const Int4Weight embed = int4_weight(w, 0, d, w[0].size(0), "embedding");
  const float* final_norm = norm_weight(w, 3, d, "final norm");
  const Int4Weight head = int4_weight(w, 4, d, w[4].size(0), "output head");

  // Activations of the B rows, reused across calls (the worker threads read them).
  thread_local ActivationBuffers buffers;
  thread_local std::vector<float> x, h, qkv, attn, gate_up, hidden;
  x.resize(s.B * d), h.resize(s.B * std::max(d, heads * D)), qkv.resize(s.B * qkv_width);
  attn.resize(s.B * heads * D), gate_up.resize(s.B * 2 * ff), hidden.resize(s.B * ff);

  const int64_t* id = ids.data_ptr<int64_t>();
  for (int64_t b = 0; b < s.B; ++b) {
    TORCH_CHECK(id[b] >= 0 && id[b] < embed.N, "int4_decode_step: token id ", id[b],
                " is outside the vocabulary (", embed.N, ")");
    dequantize_rows(embed.codes + id[b] * (d / 2), embed.scales + id[b] * (d / kGroup),
                    embed.mins + id[b] * (d / kGroup), d, 0, 1, x.data() + b * d);
  }
  const RopeTables rope = rope_tables(inv_freq, position, rope_factor, s.B, D);
  const float* cos = rope.cos.data_ptr<float>();
  const float* sin = rope.sin.data_ptr<float>();

  for (int64_t l = 0; l < layers; ++l) {
    const int64_t at = kWeightsBefore + kWeightsPerLayer * l;
    const float* attn_norm = norm_weight(w, at, d, "attention norm");
    const Int4Weight wqkv = int4_weight(w, at + 1, d, qkv_width, "qkv projection");
    const Int4Weight wo = int4_weight(w, at + 4, heads * D, d, "output projection");
    const float* mlp_norm = norm_weight(w, at + 7, d, "mlp norm");
    const Int4Weight wgu = int4_weight(w, at + 8, d, 2 * ff, "gate/up projection");
    const Int4Weight wdown = int4_weight(w, at + 11, ff, d, "down projection");
    check_cache(keys[l], s, "keys");
    check_cache(values[l], s, "values");

    for (int64_t b = 0; b < s.B; ++b) {
      rms_norm(x.data() + b * d, attn_norm, d, static_cast<float>(eps), h.data() + b * d);
    }
    int4_matmul(h.data(), s.B, d, wqkv.codes, wqkv.scales, wqkv.mins, wqkv.N, qkv.data(),
                buffers);
    for (int64_t b = 0; b < s.B; ++b) {  // rows: H query heads, Hkv key heads, Hkv value heads
      float* row = qkv.data() + b * qkv_width;
      for (int64_t head_index = 0; head_index < heads + kv_heads; ++head_index) {
        rotate(row + head_index * D, cos + b * D, sin + b * D, D);
      }
      for (int64_t g = 0; g < kv_heads; ++g) {
        std::memcpy(cache_head(keys[l], s, b, g) + position * D, row + (heads + g) * D,
                    D * sizeof(float));
        std::memcpy(cache_head(values[l], s, b, g) + position * D,
                    row + (heads + kv_heads + g) * D, D * sizeof(float));
      }
    }
    attention(qkv.data(), keys[l], values[l], s, scale, attn.data());
    int4_matmul(attn.data(), s.B, heads * D, wo.codes, wo.scales, wo.mins, d, h.data(),
                buffers);
    for (int64_t i = 0; i < s.B * d; ++i) x[i] += h[i];

    for (int64_t b = 0; b < s.B; ++b) {
      rms_norm(x.data() + b * d, mlp_norm, d, static_cast<float>(eps), h.data() + b * d);
    }
    int4_matmul(h.data(), s.B, d, wgu.codes, wgu.scales, wgu.mins, 2 * ff, gate_up.data(),
                buffers);
    silu_times_up(gate_up.data(), s.B, ff, hidden.data());
    int4_matmul(hidden.data(), s.B, ff, wdown.codes, wdown.scales, wdown.mins, d, h.data(),
                buffers);
    for (int64_t i = 0; i < s.B * d; ++i) x[i] += h[i];
  }

  for (int64_t b = 0; b < s.B; ++b) {
    rms_norm(x.data() + b * d, final_norm, d, static_cast<float>(eps), h.data() + b * d);
  }
  at::Tensor logits = at::empty({s.B, head.N}, ids.options().dtype(at::kFloat));
  int4_matmul(h.data(), s.B, d, head.codes, head.scales, head.mins, head.N,
              logits.data_ptr<float>(), buffers);
  return logits;
}

}  // namespace
