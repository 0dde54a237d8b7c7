"""zenlm::int4_linear against the formula written out in float64, and its layout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

from zenlm import kernels
from zenlm.kernels.layout import pack_codes, unpack_codes

HAS_COMPILER = shutil.which(os.environ.get("CXX", "g++")) is not None


def float64_reference(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor,
                      mins: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's arithmetic slowly: x in int8 blocks of 32 (scale = max|x| / 127,
    round half to even) times w = q * scale + min.

    Returns (what the kernel computes, the product with x unquantized), both (M, N).
    """
    M, K = x.shape
    N = q.shape[0]
    x64 = x.double()
    blocks = x64.view(M, K // 32, 32)
    step = blocks.abs().amax(-1, keepdim=True) / 127
    x_q = (torch.round(blocks / torch.where(step > 0, step, 1)) * step).view(M, K)
    coded = (q.double().view(N, K // 32, 32) * scales.double()[..., None]).view(N, K)
    offsets = mins.double().repeat_interleave(32, dim=1)  # (N, K)
    return x_q @ (coded + offsets).T, x64 @ (coded + offsets).T


def random_layer(N: int, K: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (N, K), generator=g)
    scales = (torch.rand(N, K // 32, generator=g) / 10).half()
    mins = (-torch.rand(N, K // 32, generator=g) * 8 * scales.float()).half()
    return q, scales, mins


@pytest.mark.parametrize("K", [64, 512, 576, 1536, 1088])
def test_layout_round_trips(K):
    q = torch.randint(0, 16, (7, K))
    packed = pack_codes(q)
    assert packed.shape == (7, K // 2) and packed.dtype == torch.uint8
    assert torch.equal(unpack_codes(packed), q.to(torch.uint8))
    assert torch.equal(unpack_codes(packed[None, 2:4]), q[None, 2:4].to(torch.uint8))


def test_the_kernel_builds_where_there_is_a_compiler():
    if not HAS_COMPILER:
        pytest.skip("no C++ compiler: int4 falls back to dequantized weights")
    assert kernels.load(), "the compiler is there but the kernel did not build (see the log)"


# M covers the kernel's tiles of 4 activation rows and their remainders; N its tiles of
# 4 weight rows (and 2) and theirs; K chunks of 16 groups, pairs of groups, and both.
@pytest.mark.parametrize("M,N,K", [(1, 576, 576), (1, 13, 64), (3, 960, 1536), (4, 8, 512),
                                   (5, 19, 1088), (9, 64, 576)])
def test_int4_linear_equals_the_float64_formula(M, N, K):
    if not kernels.load():
        pytest.skip("kernel unavailable")
    q, scales, mins = random_layer(N, K)
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(1))
    x[0, :32] = 0  # an all-zero block has scale 0
    got = torch.ops.zenlm.int4_linear(x, pack_codes(q), scales, mins).double()
    expected, unquantized = float64_reference(x, q, scales, mins)
    scale = expected.abs().max()
    assert (got - expected).abs().max() <= 1e-5 * scale  # float32 sums only
    # int8 blocks of Gaussian x err by ~ (max|x| / 127) / sqrt(12) ~ 0.6% of |x|
    assert (got - unquantized).norm() <= 0.02 * unquantized.norm()


@pytest.fixture
def small_layer():
    """A packed (8, 64) int4 layer: codes, scales, mins."""
    if not kernels.load():
        pytest.skip("kernel unavailable")
    q, scales, mins = random_layer(8, 64)
    return pack_codes(q), scales, mins


def test_int4_linear_rejects_bad_shapes_naming_them(small_layer):
    codes, scales, mins = small_layer
    with pytest.raises(RuntimeError, match=r"K \(96\) must be a multiple of 64"):
        torch.ops.zenlm.int4_linear(torch.randn(1, 96), codes, scales, mins)
    with pytest.raises(RuntimeError, match="float32"):
        torch.ops.zenlm.int4_linear(torch.randn(1, 64).double(), codes, scales, mins)
    with pytest.raises(RuntimeError, match="float16"):
        torch.ops.zenlm.int4_linear(torch.randn(1, 64), codes, scales.float(), mins)


@pytest.mark.parametrize("N,K", [(3, 64), (19, 576), (40, 1088), (5, 1536)])
def test_int4_dequantize_gives_each_code_times_scale_plus_min_in_bfloat16(N, K):
    if not kernels.load():
        pytest.skip("kernel unavailable")
    q, scales, mins = random_layer(N, K)
    got = torch.ops.zenlm.int4_dequantize(pack_codes(q), scales, mins)
    assert got.dtype == torch.bfloat16 and got.shape == (N, K)
    groups = q.double().view(N, K // 32, 32)
    exact = (groups * scales.double()[..., None] + mins.double()[..., None]).view(N, K)
    # one bfloat16 rounding (relative 2^-9), plus float32's in code * scale + min
    assert ((got.double() - exact).abs() <= exact.abs() * 2**-8 + 1e-6).all()


def test_int4_dequantize_rejects_bad_shapes_naming_them(small_layer):
    codes, scales, mins = small_layer
    with pytest.raises(RuntimeError, match=r"K \(32\) must be a multiple of 64"):
        torch.ops.zenlm.int4_dequantize(codes[:, :16].contiguous(), scales, mins)
    with pytest.raises(RuntimeError, match=r"\(N, K / 32\) = \(8, 2\)"):
        torch.ops.zenlm.int4_dequantize(codes, scales[:, :1].contiguous(), mins)


PORTABLE_CHECK = """
import torch
from zenlm import kernels
from zenlm.kernels.layout import pack_codes
from tests.kernels.test_int4_kernel import float64_reference, random_layer
assert kernels.load()
q, scales, mins = random_layer(21, 1088, seed=3)
x = torch.randn(6, 1088, generator=torch.Generator().manual_seed(4))
got = torch.ops.zenlm.int4_linear(x, pack_codes(q), scales, mins).double()
expected, _ = float64_reference(x, q, scales, mins)
print(((got - expected).abs().max() / expected.abs().max()).item())
"""


def test_the_portable_build_computes_the_same(tmp_path):
    """Built for a CPU without AVX-512 (x86-64-v3), the plain loops give the same result."""
    if not HAS_COMPILER:
        pytest.skip("no C++ compiler")
    env = dict(os.environ, ZENLM_KERNEL_CACHE=str(tmp_path), ZENLM_KERNEL_ARCH="x86-64-v3")
    out = subprocess.run([sys.executable, "-c", PORTABLE_CHECK], env=env, capture_output=True,
                         text=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip()) <= 1e-5
    assert len(list(tmp_path.glob("*.so"))) == 1


NO_KERNEL_CHECK = """
import logging, torch
logging.basicConfig(level=logging.WARNING)
from zenlm import kernels
from zenlm.quant import Int4Linear
assert not kernels.load()
layer = Int4Linear(torch.randn(16, 64), None)
x = torch.randn(3, 64)
assert not layer.use_kernel
assert torch.allclose(layer(x), x @ layer.dequantized().T)
print("fallback ok")
"""


@pytest.mark.parametrize("env", [{"ZENLM_KERNELS": "0"}, {"CXX": "/nonexistent/g++"}])
def test_without_the_kernel_int4_falls_back_to_dequantized_weights(tmp_path, env):
    """Switched off, or no compiler: load() says False (and why), int4 still computes."""
    env = dict(os.environ, ZENLM_KERNEL_CACHE=str(tmp_path), **env)
    out = subprocess.run([sys.executable, "-c", NO_KERNEL_CHECK], env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert "fallback ok" in out.stdout
    if "CXX" in env and env["CXX"].startswith("/nonexistent"):
        assert "no C++ compiler" in out.stderr
