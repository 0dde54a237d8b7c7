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

// The inner routines are in int4_core.h; fused_step.h (zenlm::int4_decode_step, a whole
// decode step in one call) uses them too.

#include "fused_step.h"
#include "int4_core.h"

namespace {

// The weight (N, K) in bfloat16 or float32: long prompts multiply by it with oneDNN's
// (or MKL's) matmul, ~470 GMAC/s in bfloat16 on AVX512-BF16, rather than with
// int4_linear's tiles (~150). Where bfloat16 is not native, float32 is the fast one.
at::Tensor int4_dequantize(const at::Tensor& codes, const at::Tensor& scales,
                           const at::Tensor& mins, c10::ScalarType dtype) {
  const int64_t K = codes.size(1) * 2, N = codes.size(0);
  check_weight("int4_dequantize", K, codes, scales, mins);
  TORCH_CHECK(dtype == at::kBFloat16 || dtype == at::kFloat,
              "int4_dequantize: dtype must be bfloat16 or float32, got ", dtype);
  at::Tensor out = at::empty({N, K}, codes.options().dtype(dtype));
  const auto* c = codes.data_ptr<uint8_t>();
  const auto* s = scales.data_ptr<c10::Half>();
  const auto* z = mins.data_ptr<c10::Half>();
  at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
    if (dtype == at::kFloat) {
      dequantize_rows(c, s, z, K, n0, n1, out.data_ptr<float>());
    } else {
      dequantize_rows(c, s, z, K, n0, n1, out.data_ptr<c10::BFloat16>());
    }
  });
  return out;
}

at::Tensor int4_linear(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales,
                       const at::Tensor& mins) {
  check_inputs(x, codes, scales, mins);
  const int64_t M = x.size(0), K = x.size(1), N = codes.size(0);
  // The calling thread's buffers (the worker threads inside read them by reference).
  thread_local ActivationBuffers buffers;
  at::Tensor out = at::empty({M, N}, x.options());
  int4_matmul(x.data_ptr<float>(), M, K, codes.data_ptr<uint8_t>(),
              scales.data_ptr<c10::Half>(), mins.data_ptr<c10::Half>(), N,
              out.data_ptr<float>(), buffers);
  return out;
}

}  // namespace

TORCH_LIBRARY(zenlm, m) {
  m.def("int4_linear(Tensor x, Tensor codes, Tensor scales, Tensor mins) -> Tensor");
  m.def("int4_dequantize(Tensor codes, Tensor scales, Tensor mins, ScalarType dtype) -> Tensor");
  m.def(
      "int4_decode_step(Tensor ids, Tensor(a!)[] keys, Tensor(b!)[] values, int position, "
      "Tensor[] weights, Tensor inv_freq, float rope_factor, int heads, int kv_heads, "
      "float eps, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(zenlm, CPU, m) {
  m.impl("int4_linear", &int4_linear);
  m.impl("int4_dequantize", &int4_dequantize);
  m.impl("int4_decode_step", &int4_decode_step);
}

// The path this build multiplies with, as a tag build.py reads from the file's bytes
// before loading a cached library (loading runs code; reading does not).
#if ZENLM_AVX512
#define ZENLM_PATH_NAME "avx512"
#else
#define ZENLM_PATH_NAME "avx2"
#endif
extern "C" __attribute__((used)) const char zenlm_kernel_path[] =
    "zenlm-kernel-path:" ZENLM_PATH_NAME;
