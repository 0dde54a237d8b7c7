// zenlm::int4_decode_step: one decode step of a whole int4 Llama-family decoder in one call.
//
// Why: at batch 1 the int4 matmuls of a SmolLM2-135M step take ~6 ms, and the ~20 small
// eager ops around them per layer (norms, RoPE, cache writes, attention, SiLU, residuals)
// took ~4.7 ms more in Python and PyTorch's dispatch. Here each of them is a loop over a
// few hundred floats, between the int4 kernel's own matmuls (int4_core.h).
//
// The step, for B rows that all hold `position` tokens in the cache, token ids (B):
//   x = embedding rows (the int4 table, dequantized as Int4Linear.rows does)
//   per layer: h = rmsnorm(x) w_attn; qkv = h Wqkv^T; RoPE on q and k at `position`
//     (rotate-half layout); k, v written to slot `position` of the layer's cache;
//     each query head attends to slots 0..position of its KV head (scores x scale,
//     softmax in float32); x += attn Wo^T; h = rmsnorm(x) w_mlp; [g, u] = h Wgu^T;
//     x += (silu(g) * u) Wdown^T
//   logits = (rmsnorm(x) w_final) Whead^T
// which is what DecoderLM's eager forward computes for such a model (zenlm/quant/
// fused_step.py decides which models and calls qualify; the rest decode as before).

// Included by int4_linear.cpp (one translation unit: torch's headers, which take most of
// a build's time, are parsed once), which registers the op.
#pragma once

#include <algorithm>

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

// out = x / sqrt(mean(x^2) + eps) * w over one row of d.
void rms_norm(const float* x, const float* w, int64_t d, float eps, float* out) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < d; ++i) sum += x[i] * x[i];
  const float r = 1.f / std::sqrt(sum / static_cast<float>(d) + eps);
#pragma omp simd
  for (int64_t i = 0; i < d; ++i) out[i] = x[i] * r * w[i];
}

// Rotate-half RoPE of one head of D in place: (x1, x2) -> (x1 c - x2 s, x2 c + x1 s).
void rotate(float* x, const float* cos, const float* sin, int64_t D) {
  const int64_t half = D / 2;
#pragma omp simd
  for (int64_t i = 0; i < half; ++i) {
    const float a = x[i], b = x[i + half];
    x[i] = a * cos[i] - b * sin[i];
    x[i + half] = b * cos[i] + a * sin[i];
  }
}

// exp of 8 floats (Cephes' expf: 2^n times a degree-6 polynomial of the remainder, ~1
// ulp; inputs clamped to [-87.3, 88.7], so exp of a very negative number is ~1e-38, not
// 0). glibc's expf a float at a time was ~0.5 ms of a SmolLM2 step (46k SiLUs).
inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.7f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);  // ln 2, in two parts
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  // 2^n, split in two factors so that n = 128 (x near 88.7) does not overflow the exponent
  const __m256i half = _mm256_srai_epi32(_mm256_cvtps_epi32(n), 1);
  const __m256i rest = _mm256_sub_epi32(_mm256_cvtps_epi32(n), half);
  const __m256 a = _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_add_epi32(half, _mm256_set1_epi32(127)), 23));
  const __m256 b = _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_add_epi32(rest, _mm256_set1_epi32(127)), 23));
  return _mm256_mul_ps(_mm256_mul_ps(p, a), b);
}

// out[i] = exp(x[i] - shift) for n floats; returns their sum.
float exp_shifted(const float* x, float shift, int64_t n, float* out) {
  int64_t i = 0;
  __m256 sum = _mm256_setzero_ps();
  const __m256 s = _mm256_set1_ps(shift);
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), s));
    _mm256_storeu_ps(out + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sum);
  float total = 0.f;
  for (float lane : lanes) total += lane;
  for (; i < n; ++i) total += (out[i] = std::exp(x[i] - shift));
  return total;
}

// out[i] = silu(gate[i]) * up[i] = gate[i] / (1 + exp(-gate[i])) * up[i].
void silu_times(const float* gate, const float* up, int64_t n, float* out) {
  int64_t i = 0;
  const __m256 one = _mm256_set1_ps(1.f);
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)),
                                            _mm256_loadu_ps(up + i)));
  }
  for (; i < n; ++i) out[i] = gate[i] / (1.f + std::exp(-gate[i])) * up[i];
}

float dot(const float* a, const float* b, int64_t n) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// One query head (D) against S cached keys and values (S, D); `scores` holds S floats.
void attend(const float* q, const float* keys, const float* values, int64_t S, int64_t D,
            float scale, float* scores, float* out) {
  float top = -INFINITY;
  for (int64_t s = 0; s < S; ++s) {
    scores[s] = dot(q, keys + s * D, D) * scale;
    top = std::max(top, scores[s]);
  }
  const float total = exp_shifted(scores, top, S, scores);
  const float inverse = 1.f / total;
  std::fill(out, out + D, 0.f);
  for (int64_t s = 0; s < S; ++s) {
    const float p = scores[s] * inverse;
    const float* v = values + s * D;
#pragma omp simd
    for (int64_t i = 0; i < D; ++i) out[i] += p * v[i];
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
  thread_local std::vector<float> x, h, qkv, attn, gate_up, hidden, scores, angles;
  x.resize(s.B * d), h.resize(s.B * std::max(d, heads * D)), qkv.resize(s.B * qkv_width);
  attn.resize(s.B * heads * D), gate_up.resize(s.B * 2 * ff), hidden.resize(s.B * ff);
  scores.resize(s.B * heads * s.S), angles.resize(2 * D);

  const int64_t* id = ids.data_ptr<int64_t>();
  for (int64_t b = 0; b < s.B; ++b) {
    TORCH_CHECK(id[b] >= 0 && id[b] < embed.N, "int4_decode_step: token id ", id[b],
                " is outside the vocabulary (", embed.N, ")");
    dequantize_rows(embed.codes + id[b] * (d / 2), embed.scales + id[b] * (d / kGroup),
                    embed.mins + id[b] * (d / kGroup), d, 0, 1, x.data() + b * d);
  }
  // cos and sin of the position's angles (float32 products, as RotaryEmbedding makes them).
  float* cos = angles.data();
  float* sin = angles.data() + D;
  const float* freq = inv_freq.data_ptr<float>();
  for (int64_t i = 0; i < D / 2; ++i) {
    const float angle = static_cast<float>(position) * freq[i];
    cos[i] = cos[i + D / 2] = std::cos(angle) * static_cast<float>(rope_factor);
    sin[i] = sin[i + D / 2] = std::sin(angle) * static_cast<float>(rope_factor);
  }

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
        rotate(row + head_index * D, cos, sin, D);
      }
      for (int64_t g = 0; g < kv_heads; ++g) {
        std::memcpy(cache_head(keys[l], s, b, g) + position * D, row + (heads + g) * D,
                    D * sizeof(float));
        std::memcpy(cache_head(values[l], s, b, g) + position * D,
                    row + (heads + kv_heads + g) * D, D * sizeof(float));
      }
    }
    // One task per few query heads: small contexts are cheaper on one thread.
    const int64_t grain = std::max<int64_t>(1, 16384 / (s.S * D));
    const int64_t group = heads / kv_heads;
    // Plain pointers: in a worker thread, the names of the thread_local buffers above
    // would be that thread's own (empty) buffers.
    const float* queries = qkv.data();
    float* score_rows = scores.data();
    float* attn_rows = attn.data();
    const at::Tensor &layer_keys = keys[l], &layer_values = values[l];
    at::parallel_for(0, s.B * heads, grain, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t b = t / heads, q_head = t % heads, g = q_head / group;
        attend(queries + b * qkv_width + q_head * D, cache_head(layer_keys, s, b, g),
               cache_head(layer_values, s, b, g), s.S, D, static_cast<float>(scale),
               score_rows + t * s.S, attn_rows + t * D);
      }
    });
    int4_matmul(attn.data(), s.B, heads * D, wo.codes, wo.scales, wo.mins, d, h.data(),
                buffers);
    for (int64_t i = 0; i < s.B * d; ++i) x[i] += h[i];

    for (int64_t b = 0; b < s.B; ++b) {
      rms_norm(x.data() + b * d, mlp_norm, d, static_cast<float>(eps), h.data() + b * d);
    }
    int4_matmul(h.data(), s.B, d, wgu.codes, wgu.scales, wgu.mins, 2 * ff, gate_up.data(),
                buffers);
    for (int64_t b = 0; b < s.B; ++b) {
      const float* gate = gate_up.data() + b * 2 * ff;
      const float* up = gate + ff;
      silu_times(gate, up, ff, hidden.data() + b * ff);
    }
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
