// zenlm::swiglu and zenlm::swiglu_backward: SwiGLU's elementwise part, one pass each way;
// zenlm::rope: RoPE's rotation (and its transpose, the backward) in one pass;
// zenlm::rms_norm_backward: RMSNorm's input and weight gradients in one pass.
//
// Why: in a small model's float32 training step, silu(g) * u as PyTorch ops is three
// passes over (B, T, d_ff) tensors forward (silu, mul, and autograd keeps silu(g) too)
// and three backward (dout * u, dout * silu(g), silu's backward), ~4% of the step. Here
// the forward reads g and u once and writes out = silu(g) * u; the backward reads dout,
// g and u once and writes dg and du, recomputing sigmoid(g) instead of storing it:
//   s = 1 / (1 + exp(-g)),  du = dout * g * s,  dg = dout * u * s * (1 + g * (1 - s)).
//
// The arithmetic is on GCC/Clang vectors of 8 floats, which compile to the level's
// vector instructions (build.py's -march flags), exp included: `exp_approx` is Cephes'
// expf (~1 ulp). Inputs are float32 and contiguous (the Python side, zenlm/nn/swiglu.py,
// checks and uses PyTorch's ops otherwise).

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <vector>

namespace {

// 8 floats (or int32s) in a GCC/Clang vector: arithmetic on it compiles to the level's
// vector instructions (-march in build.py; two 128-bit halves where AVX is missing).
// GCC does not vectorize the same code as a loop over floats (the clamps in exp_approx
// stop it, "control flow in loop"), and libm's expf never is without -ffast-math.
using f8 = float __attribute__((vector_size(32)));
using i8 = int32_t __attribute__((vector_size(32)));
constexpr int64_t kLanes = 8;

// exp(x) lane by lane to ~1 ulp (Cephes' expf): x = n ln2 + r, a degree-6 polynomial in
// r, 2^n put into the exponent bits. x is clamped to [-87.3, 88.7] (exp of the bounds is
// a normal float, so no inf or denormal), and a NaN stays NaN (it fails both clamps).
inline f8 exp_approx(f8 x) {
  x = x > 88.7f ? f8{} + 88.7f : x;
  x = x < -87.3f ? f8{} - 87.3f : x;
  // n = round(x / ln 2): adding 1.5 * 2^23 rounds to an integer in float32 arithmetic
  const f8 n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  // x - n ln2 in two parts (Cody-Waite), so that r keeps its precision for large n
  f8 r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  f8 p = f8{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const i8 bits = (__builtin_convertvector(n, i8) + 127) << 23;  // 2^n, n in [-126, 128)
  return p * std::bit_cast<f8>(bits);
}

inline f8 sigmoid(f8 x) { return 1.0f / (1.0f + exp_approx(-x)); }

inline f8 load(const float* p) {
  f8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store(float* p, f8 v) { std::memcpy(p, &v, sizeof v); }

// out = silu(g) * u over n elements; `tail` computes the last n % 8 through a padded copy.
inline f8 swiglu_lanes(f8 g, f8 u) { return g * sigmoid(g) * u; }

void swiglu_rows(const float* g, const float* u, float* o, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    store(o + i, swiglu_lanes(load(g + i), load(u + i)));
  }
  if (i < n) {
    f8 gt{}, ut{}, ot;
    std::memcpy(&gt, g + i, (n - i) * sizeof(float));
    std::memcpy(&ut, u + i, (n - i) * sizeof(float));
    ot = swiglu_lanes(gt, ut);
    std::memcpy(o + i, &ot, (n - i) * sizeof(float));
  }
}

// dg, du from d = dL/dout: s = sigmoid(g), du = d silu(g), dg = d u s (1 + g (1 - s)).
inline void swiglu_backward_lanes(f8 d, f8 g, f8 u, f8& dg, f8& du) {
  const f8 s = sigmoid(g);
  const f8 silu = g * s;
  du = d * silu;
  dg = d * u * (s + silu * (1.0f - s));
}

void swiglu_backward_rows(const float* d, const float* g, const float* u, float* dg,
                          float* du, int64_t n) {
  int64_t i = 0;
  f8 a, b;
  for (; i + kLanes <= n; i += kLanes) {
    swiglu_backward_lanes(load(d + i), load(g + i), load(u + i), a, b);
    store(dg + i, a);
    store(du + i, b);
  }
  if (i < n) {
    const size_t bytes = (n - i) * sizeof(float);
    f8 dt{}, gt{}, ut{};
    std::memcpy(&dt, d + i, bytes);
    std::memcpy(&gt, g + i, bytes);
    std::memcpy(&ut, u + i, bytes);
    swiglu_backward_lanes(dt, gt, ut, a, b);
    std::memcpy(dg + i, &a, bytes);
    std::memcpy(du + i, &b, bytes);
  }
}

// Elements per task: large enough that a thread's start-up is paid back.
constexpr int64_t kGrain = 16384;

void check(const char* op, const at::Tensor& a, const char* name, const at::Tensor& like) {
  TORCH_CHECK(a.scalar_type() == at::kFloat, op, ": ", name, " must be float32, got ",
              a.scalar_type());
  TORCH_CHECK(a.is_contiguous(), op, ": ", name, " must be contiguous");
  TORCH_CHECK(a.sizes() == like.sizes(), op, ": ", name, " has shape ", a.sizes(),
              ", expected ", like.sizes());
}

// out = silu(gate) * up, all of one shape (..., d_ff).
at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up) {
  check("swiglu", gate, "gate", gate);
  check("swiglu", up, "up", gate);
  at::Tensor out = at::empty_like(gate);
  const float* g = gate.data_ptr<float>();
  const float* u = up.data_ptr<float>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, gate.numel(), kGrain, [&](int64_t begin, int64_t end) {
    swiglu_rows(g + begin, u + begin, o + begin, end - begin);
  });
  return out;
}

// (dgate, dup) from the gradient of out = silu(gate) * up, all of one shape.
std::tuple<at::Tensor, at::Tensor> swiglu_backward(const at::Tensor& grad, const at::Tensor& gate,
                                                   const at::Tensor& up) {
  check("swiglu_backward", gate, "gate", gate);
  check("swiglu_backward", up, "up", gate);
  check("swiglu_backward", grad, "grad", gate);
  at::Tensor grad_gate = at::empty_like(gate), grad_up = at::empty_like(up);
  const float* d = grad.data_ptr<float>();
  const float* g = gate.data_ptr<float>();
  const float* u = up.data_ptr<float>();
  float* dg = grad_gate.data_ptr<float>();
  float* du = grad_up.data_ptr<float>();
  at::parallel_for(0, gate.numel(), kGrain, [&](int64_t begin, int64_t end) {
    swiglu_backward_rows(d + begin, g + begin, u + begin, dg + begin, du + begin,
                         end - begin);
  });
  return {grad_gate, grad_up};
}

// RoPE, "rotate half" layout, on rows of D = 2 h: out = x cos + R(x) sin with
// R(x) = [-x2, x1], i.e. out1 = x1 c1 - x2 s1, out2 = x2 c2 + x1 s2. Its transpose (the
// backward) is out = x cos + R^T(x sin), R^T(y) = [y2, -y1]: out1 = x1 c1 + x2 s2,
// out2 = x2 c2 - x1 s1. `c`, `s`: the row's table entries (D each).
void rope_row(const float* __restrict x, const float* __restrict c, const float* __restrict s,
              float* __restrict out, int64_t h) {
  for (int64_t i = 0; i < h; ++i) {
    out[i] = x[i] * c[i] - x[i + h] * s[i];
    out[i + h] = x[i + h] * c[i + h] + x[i] * s[i + h];
  }
}

void rope_row_transposed(const float* __restrict x, const float* __restrict c,
                         const float* __restrict s, float* __restrict out, int64_t h) {
  for (int64_t i = 0; i < h; ++i) {
    out[i] = x[i] * c[i] + x[i + h] * s[i + h];
    out[i + h] = x[i + h] * c[i + h] - x[i] * s[i];
  }
}

// x (B, T, H, D) rotated by the tables cos, sin (B or 1, T, 1, D); `transposed`: by
// minus the angles, which is the backward of the rotation. All float32, contiguous.
at::Tensor rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                bool transposed) {
  TORCH_CHECK(x.dim() == 4 && x.size(3) % 2 == 0, "rope: x must be (B, T, H, D) with D even, got ",
              x.sizes());
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3);
  check("rope", x, "x", x);
  check("rope", sin, "sin", cos);
  TORCH_CHECK(cos.scalar_type() == at::kFloat && cos.is_contiguous(),
              "rope: cos must be float32 and contiguous");
  TORCH_CHECK(cos.dim() == 4 && (cos.size(0) == B || cos.size(0) == 1) && cos.size(1) == T &&
                  cos.size(2) == 1 && cos.size(3) == D,
              "rope: cos and sin must be (", B, " or 1, ", T, ", 1, ", D, "), got ", cos.sizes());
  at::Tensor out = at::empty_like(x);
  const float* px = x.data_ptr<float>();
  const float* pc = cos.data_ptr<float>();
  const float* ps = sin.data_ptr<float>();
  float* po = out.data_ptr<float>();
  const int64_t table_rows = cos.size(0) * T;  // T or B T
  at::parallel_for(0, B * T * H, std::max<int64_t>(1, kGrain / D), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t table = (r / H) % table_rows;  // (b, t) of row r, or t if one table
      const float* c = pc + table * D;
      const float* s = ps + table * D;
      if (transposed) {
        rope_row_transposed(px + r * D, c, s, po + r * D, D / 2);
      } else {
        rope_row(px + r * D, c, s, po + r * D, D / 2);
      }
    }
  });
  return out;
}

// RMSNorm y = x r w, r = (mean(x^2) + eps)^-1/2 per row of D: with g = dL/dy,
// dx = r g w - x r^3 sum(g w x) / D, and dw = sum over rows of g x r. One read of g and
// x (the row stays in L1 for its second loop); dw is summed in float64, per thread, then
// added up, so that the result does not depend on the number of threads beyond rounding.
void rms_norm_backward_row(const float* __restrict g, const float* __restrict x,
                           const float* __restrict w, float r, float* __restrict dx,
                           double* __restrict dw, int64_t D) {
  // sum(g w x) in 8 running sums (a loop over floats would add them one by one, in order)
  f8 sums{};
  int64_t i = 0;
  for (; i + kLanes <= D; i += kLanes) {
    sums += load(g + i) * load(w + i) * load(x + i);
  }
  float dot = 0.0f;
  for (int lane = 0; lane < kLanes; ++lane) {
    dot += sums[lane];
  }
  for (; i < D; ++i) {
    dot += g[i] * w[i] * x[i];
  }
  const float c = r * r * r * dot / static_cast<float>(D);
  for (i = 0; i < D; ++i) {
    dx[i] = r * g[i] * w[i] - x[i] * c;
    dw[i] += static_cast<double>(g[i] * x[i] * r);
  }
}

// (dx, dw) for x (..., D), weight (D,), rstd (..., 1) as aten::_fused_rms_norm gives it.
std::tuple<at::Tensor, at::Tensor> rms_norm_backward(const at::Tensor& grad, const at::Tensor& x,
                                                     const at::Tensor& weight,
                                                     const at::Tensor& rstd) {
  check("rms_norm_backward", x, "x", x);
  check("rms_norm_backward", grad, "grad", x);
  const int64_t D = x.size(-1), N = x.numel() / D;
  TORCH_CHECK(weight.scalar_type() == at::kFloat && weight.is_contiguous() &&
                  weight.dim() == 1 && weight.size(0) == D,
              "rms_norm_backward: weight must be float32 (", D, "), got ", weight.sizes());
  TORCH_CHECK(rstd.scalar_type() == at::kFloat && rstd.is_contiguous() && rstd.numel() == N,
              "rms_norm_backward: rstd must be float32 with one value per row (", N, ")");
  at::Tensor grad_x = at::empty_like(x);
  const int threads = at::get_num_threads();
  std::vector<double> partial(static_cast<size_t>(threads) * D, 0.0);
  const float* pg = grad.data_ptr<float>();
  const float* px = x.data_ptr<float>();
  const float* pw = weight.data_ptr<float>();
  const float* pr = rstd.data_ptr<float>();
  float* pdx = grad_x.data_ptr<float>();
  at::parallel_for(0, N, std::max<int64_t>(1, kGrain / D), [&](int64_t n0, int64_t n1) {
    double* dw = partial.data() + static_cast<size_t>(at::get_thread_num()) * D;
    for (int64_t n = n0; n < n1; ++n) {
      rms_norm_backward_row(pg + n * D, px + n * D, pw, pr[n], pdx + n * D, dw, D);
    }
  });
  at::Tensor grad_w = at::empty({D}, x.options());
  float* pdw = grad_w.data_ptr<float>();
  for (int64_t i = 0; i < D; ++i) {
    double sum = 0.0;
    for (int t = 0; t < threads; ++t) {
      sum += partial[static_cast<size_t>(t) * D + i];
    }
    pdw[i] = static_cast<float>(sum);
  }
  return {grad_x, grad_w};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(zenlm, m) {
  m.def("swiglu(Tensor gate, Tensor up) -> Tensor");
  m.def("swiglu_backward(Tensor grad, Tensor gate, Tensor up) -> (Tensor, Tensor)");
  m.def("rope(Tensor x, Tensor cos, Tensor sin, bool transposed) -> Tensor");
  m.def("rms_norm_backward(Tensor grad, Tensor x, Tensor weight, Tensor rstd) -> "
        "(Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(zenlm, CPU, m) {
  m.impl("swiglu", &swiglu);
  m.impl("swiglu_backward", &swiglu_backward);
  m.impl("rope", &rope);
  m.impl("rms_norm_backward", &rms_norm_backward);
}
