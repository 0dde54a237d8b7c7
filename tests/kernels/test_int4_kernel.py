"""zenlm::int4_linear against the formula written out in float64, and its layout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zenlm import kernels
from zenlm.cpu import LEVELS, cpu_info, forced_level
from zenlm.kernels.build import cache_dir
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
    got = torch.ops.zenlm.int4_dequantize(pack_codes(q), scales, mins, torch.bfloat16)
    assert got.dtype == torch.bfloat16 and got.shape == (N, K)
    groups = q.double().view(N, K // 32, 32)
    exact = (groups * scales.double()[..., None] + mins.double()[..., None]).view(N, K)
    # one bfloat16 rounding (relative 2^-9), plus float32's in code * scale + min
    assert ((got.double() - exact).abs() <= exact.abs() * 2**-8 + 1e-6).all()


def test_int4_dequantize_rejects_bad_shapes_naming_them(small_layer):
    codes, scales, mins = small_layer
    with pytest.raises(RuntimeError, match=r"K \(32\) must be a multiple of 64"):
        torch.ops.zenlm.int4_dequantize(codes[:, :16].contiguous(), scales, mins,
                                            torch.float32)
    with pytest.raises(RuntimeError, match=r"\(N, K / 32\) = \(8, 2\)"):
        torch.ops.zenlm.int4_dequantize(codes, scales[:, :1].contiguous(), mins,
                                            torch.bfloat16)


LEVEL_CHECK = """
import json, torch
from zenlm import kernels
from zenlm.cpu import cpu_info
from zenlm.kernels.layout import pack_codes
from tests.kernels.test_int4_kernel import float64_reference, random_layer
path = kernels.load()
errors = []
for M, N, K in [(1, 576, 576), (3, 21, 1088), (6, 40, 1536), (9, 64, 576)]:
    q, scales, mins = random_layer(N, K, seed=M)
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(4))
    got = torch.ops.zenlm.int4_linear(x, pack_codes(q), scales, mins).double()
    expected, _ = float64_reference(x, q, scales, mins)
    errors.append(((got - expected).abs().max() / expected.abs().max()).item())
    weight = torch.ops.zenlm.int4_dequantize(pack_codes(q), scales, mins, torch.float32)
    exact = (q.double().view(N, K // 32, 32) * scales.double()[..., None]
             + mins.double()[..., None]).view(N, K)
    errors.append(((weight.double() - exact).abs().max() / exact.abs().max()).item())
print(json.dumps({"level": cpu_info().level, "path": path, "aten": torch.backends.cpu.get_cpu_capability(),
                  "error": max(errors)}))
"""

PRINT_LIBRARY = "from zenlm.kernels.build import build; print(build())"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def run_at(level: str, cache, code: str = LEVEL_CHECK, **env: str) -> subprocess.CompletedProcess:
    """`code` in a fresh process with ZENLM_CPU=level (before torch is imported)."""
    env = dict(os.environ, ZENLM_CPU=level, ZENLM_KERNEL_CACHE=str(cache), **env)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def runnable_kernel_levels() -> list[str]:
    detected = cpu_info().detected
    return list(LEVELS[1 : LEVELS.index(detected) + 1])


@pytest.fixture(scope="module")
def level_cache():
    """The kernel cache zenlm uses, where set-up (`python -m zenlm.kernels`) built this
    CPU's level: each forced level is compiled once, here or in an earlier run (a build
    takes ~20 s; the test that must compile uses a cache of its own)."""
    return cache_dir()


@pytest.mark.parametrize("level", ["avx2", "avx512", "avx512_bf16"])
def test_each_kernel_path_this_cpu_runs_computes_the_formula(level_cache, level):
    """Every path the CPU can run, forced with ZENLM_CPU: built with only that level's
    instructions, it reports its path, PyTorch's kernels are narrowed too, and it
    equals the float64 formula."""
    if not HAS_COMPILER:
        pytest.skip("no C++ compiler")
    if level not in runnable_kernel_levels():
        pytest.skip(f"this CPU ({cpu_info().detected}) cannot run {level}")
    out = run_at(level, level_cache)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["level"] == level
    assert report["path"] == ("avx2" if level == "avx2" else "avx512")
    assert report["aten"] == ("AVX2" if level == "avx2" else "AVX512")
    assert report["error"] <= 1e-5
    library = Path(run_at(level, level_cache, PRINT_LIBRARY).stdout.strip())
    assert library.name.startswith(f"zenlm_kernels_{level}_")


def test_a_forced_level_is_checked_against_the_cpu():
    assert forced_level("", "avx2") == "avx2"
    assert forced_level("native", "avx512") == "avx512"
    assert forced_level(" AVX2 ", "avx512_bf16") == "avx2"
    with pytest.raises(ValueError, match="valid here: generic, avx2, native"):
        forced_level("avx512_bf16", "avx2")
    with pytest.raises(ValueError, match="'sse9' is not a level; valid here: generic, avx2, "
                                         "avx512, native"):
        forced_level("sse9", "avx512")


def test_an_unknown_level_says_so_in_one_line_and_runs_at_the_detected_one(tmp_path):
    code = "from zenlm.cpu import cpu_info; print(cpu_info().level)"
    out = run_at("avx9000", tmp_path, code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == cpu_info().detected
    warning = [line for line in out.stderr.splitlines() if "ZENLM_CPU" in line]
    assert len(warning) == 1 and "'avx9000' is not a level; valid here:" in warning[0]


def test_a_cached_library_for_another_cpu_is_rebuilt_not_run(tmp_path, level_cache):
    """A file in the cache under this CPU's name that is not a kernel for its path (a
    copy from another CPU, or garbage) is replaced by a fresh build before anything runs."""
    if not HAS_COMPILER or "avx2" not in runnable_kernel_levels():
        pytest.skip("needs a compiler and an AVX2 CPU")
    level = runnable_kernel_levels()[-1]
    built = Path(run_at(level, level_cache, PRINT_LIBRARY).stdout.strip())
    target = tmp_path / built.name  # the file this CPU loads, in a cache of this test's own
    shutil.copyfile(built, target)
    impostors = [b"not a library"]
    if level != "avx2":
        avx2 = Path(run_at("avx2", level_cache, PRINT_LIBRARY).stdout.strip())
        impostors.append(avx2.read_bytes())
    for impostor in impostors:
        target.write_bytes(impostor)
        out = run_at(level, tmp_path)
        assert out.returncode == 0, out.stderr
        assert "was not built for this CPU" in out.stderr
        report = json.loads(out.stdout.strip().splitlines()[-1])
        assert report["path"] == ("avx2" if level == "avx2" else "avx512")
        assert report["error"] <= 1e-5


NO_KERNEL_CHECK = """
import logging, torch
logging.basicConfig(level=logging.WARNING)
from zenlm import kernels
from zenlm.quant import Int4Linear
assert kernels.load() is None
layer = Int4Linear(torch.randn(16, 64), None)
assert not layer.use_kernel
for rows in (3, 70):
    x = torch.randn(rows, 64)
    expected = x.double() @ layer.dequantized().double().T
    assert (layer(x).double() - expected).abs().max() <= 1e-4 * expected.abs().max()
parts = [Int4Linear(torch.randn(n, 64), torch.randn(n)) for n in (16, 32)]  # N % 16 == 0
fused = Int4Linear.stacked(parts)  # PyTorch's layout is rebuilt from the stacked codes
x = torch.randn(3, 64)
assert torch.allclose(fused(x), torch.cat([p(x) for p in parts], -1), rtol=1e-5, atol=1e-5)
big = Int4Linear(torch.randn(1856, 576), None)  # quantized and packed over two row slices
x = torch.randn(3, 576)
expected = x.double() @ big.dequantized().double().T
assert (big(x).double() - expected).abs().max() <= 1e-4 * expected.abs().max()
print("fallback ok")
"""


@pytest.mark.parametrize("env", [{"ZENLM_KERNELS": "0"}, {"CXX": "/nonexistent/g++"},
                                 {"CXX": "false"}, {"ZENLM_CPU": "generic"}])
def test_without_the_kernel_int4_runs_on_pytorchs_int4_kernel(tmp_path, env):
    """Switched off, no compiler, a compiler that fails, or a CPU without AVX2: load()
    says None (and why in one line), and int4 multiplies with PyTorch's int4 kernel,
    never with scalar loops."""
    env = dict(os.environ, ZENLM_KERNEL_CACHE=str(tmp_path), **env)
    out = subprocess.run([sys.executable, "-c", NO_KERNEL_CHECK], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "fallback ok" in out.stdout
    if env.get("CXX", "").startswith("/nonexistent"):
        assert "no C++ compiler" in out.stderr
    if env.get("CXX") == "false":
        assert "false -c" in out.stderr and " failed:" in out.stderr  # the command that failed
    if env.get("ZENLM_CPU") == "generic":
        assert "no int4 kernel for CPU level 'generic'" in out.stderr
