"""zenlm's one-pass elementwise ops for training against float64 formulas: SwiGLU
(silu(gate) * up and its backward), RoPE's rotation (and its transpose, the backward) and
RMSNorm's backward."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zenlm import kernels
from zenlm.cpu import cpu_info
from zenlm.nn import norm as norm_module
from zenlm.nn import rope as rope_module
from zenlm.nn import swiglu as swiglu_module
from zenlm.nn.mlp import MLP
from zenlm.nn.norm import RMSNorm
from zenlm.nn.rope import RotaryEmbedding, apply_rope
from zenlm.nn.swiglu import swiglu

ROOT = Path(__file__).resolve().parents[2]


def float64_formula(grad: torch.Tensor, gate: torch.Tensor, up: torch.Tensor):
    """(out, d_gate, d_up) in float64: out = g s u with s = 1 / (1 + e^-g), so
    d_up = grad g s and d_gate = grad u (s + g s (1 - s))."""
    g, u, d = gate.double(), up.double(), grad.double()
    s = 1 / (1 + torch.exp(-g))
    return g * s * u, d * u * (s + g * s * (1 - s)), d * g * s


def inputs(shape: tuple[int, ...], seed: int = 0):
    """gate (spread wide: both tails of the sigmoid, and its clamps), up, grad; float32."""
    gen = torch.Generator().manual_seed(seed)
    gate = torch.randn(shape, generator=gen) * 6
    flat = gate.view(-1)
    specials = torch.tensor([100.0, -100.0, 0.0, -1.2785, 88.9, -87.5, 1e-30])
    flat[: min(flat.numel(), len(specials))] = specials[: flat.numel()]
    return gate, torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)


def assert_close_to_formula(gate, up, grad, out, d_gate, d_up) -> None:
    """Within float32 rounding: ~1e-7 relative for out and d_up; d_gate's silu'(g)
    cancels near g = -1.28, so its error is bounded relative to |grad u| (1 + |g|)."""
    exp_out, exp_dg, exp_du = float64_formula(grad, gate, up)
    assert ((out.double() - exp_out).abs() <= 1e-6 * exp_out.abs() + 1e-30).all()
    assert ((d_up.double() - exp_du).abs() <= 1e-6 * exp_du.abs() + 1e-30).all()
    scale = (grad.double() * up.double()).abs() * (1 + gate.double().abs())
    assert ((d_gate.double() - exp_dg).abs() <= 1e-6 * scale + 1e-30).all()


def run_swiglu(gate, up, grad):
    g, u = gate.clone().requires_grad_(), up.clone().requires_grad_()
    out = swiglu(g, u)
    out.backward(grad)
    return out.detach(), g.grad, u.grad, type(out.grad_fn).__name__


@pytest.fixture
def kernel():
    if not swiglu_module.kernel_available():
        pytest.skip("zenlm's kernels are unavailable here (no compiler, or a generic CPU)")


# sizes around the kernel's 8 lanes, its tasks of 16384 elements, and the model's shape
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 9), (2, 5, 37), (4, 16385), (12, 64, 1024)])
def test_fused_swiglu_equals_the_float64_formula(kernel, shape):
    gate, up, grad = inputs(shape)
    out, d_gate, d_up, fn = run_swiglu(gate, up, grad)
    assert fn == "_SwiGLUBackward"
    assert_close_to_formula(gate, up, grad, out, d_gate, d_up)


@pytest.mark.filterwarnings("ignore:Input #:UserWarning")
def test_fused_swiglu_passes_gradcheck(kernel):
    """Finite differences in float32 (the kernel's only dtype): eps 1e-2, central."""
    gen = torch.Generator().manual_seed(3)
    gate = (torch.randn(3, 11, generator=gen) * 3).requires_grad_()
    up = torch.randn(3, 11, generator=gen).requires_grad_()
    assert torch.autograd.gradcheck(swiglu, (gate, up), eps=1e-2, atol=2e-3, rtol=1e-2)


def test_a_nan_gate_gives_nan_not_a_number(kernel):
    gate, up, grad = inputs((9,))
    gate[3] = float("nan")
    out, d_gate, d_up, _ = run_swiglu(gate, up, grad)
    assert out[3].isnan() and d_gate[3].isnan() and d_up[3].isnan()
    assert not out[4:].isnan().any()


@pytest.mark.parametrize("case", ["switched off", "no kernel", "no grad", "bfloat16",
                                  "not contiguous"])
def test_otherwise_swiglu_is_pytorchs_silu_times_up(monkeypatch, case):
    gate, up, grad = inputs((4, 10))
    if case == "switched off":
        monkeypatch.setenv(swiglu_module.ENV_SWITCH, "0")
    if case == "no kernel":
        monkeypatch.setattr(swiglu_module, "kernel_available", lambda: False)
    if case == "no grad":
        with torch.no_grad():
            out = swiglu(gate, up)
        assert out.grad_fn is None
        assert_close_to_formula(gate, up, grad, out, *float64_formula(grad, gate, up)[1:])
        return
    if case == "bfloat16":
        g, u = gate.bfloat16().requires_grad_(), up.bfloat16().requires_grad_()
        assert type(swiglu(g, u).grad_fn).__name__ == "MulBackward0"
        return
    if case == "not contiguous":
        gate, up, grad = gate.T, up.T, grad.T
    out, d_gate, d_up, fn = run_swiglu(gate, up, grad)
    assert fn == "MulBackward0"
    assert_close_to_formula(gate, up, grad, out, d_gate, d_up)


def test_a_gated_silu_mlp_trains_the_same_fused_or_not(kernel, monkeypatch):
    """The invariant the model relies on: one MLP's output and gradients agree, with the
    fused op and with PyTorch's, to float32 rounding."""
    torch.manual_seed(0)
    mlp = MLP(16, 40, activation="silu", gated=True, bias=False)
    x = torch.randn(2, 5, 16)
    results = []
    for switch in ("1", "0"):
        monkeypatch.setenv(swiglu_module.ENV_SWITCH, switch)
        mlp.zero_grad()
        out = mlp(x)
        out.square().sum().backward()
        results.append((out.detach(), *(p.grad.clone() for p in mlp.parameters())))
    for fused, plain in zip(*results, strict=True):
        assert torch.allclose(fused, plain, rtol=1e-5, atol=1e-6)


def rope_float64(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, grad: torch.Tensor):
    """(out, dx) in float64, rotate-half pairs (x1, x2) = (x[:h], x[h:]):
    out = (x1 c1 - x2 s1, x2 c2 + x1 s2); dx = (g1 c1 + g2 s2, g2 c2 - g1 s1)."""
    x, c, s, g = x.double(), cos.double(), sin.double(), grad.double()
    h = x.shape[-1] // 2
    x1, x2, g1, g2 = x[..., :h], x[..., h:], g[..., :h], g[..., h:]
    c1, c2, s1, s2 = c[..., :h], c[..., h:], s[..., :h], s[..., h:]
    return (torch.cat((x1 * c1 - x2 * s1, x2 * c2 + x1 * s2), -1),
            torch.cat((g1 * c1 + g2 * s2, g2 * c2 - g1 * s1), -1))


def check_rope(B: int, T: int, H: int, D: int, per_row: bool) -> None:
    """Forward and backward of apply_rope on (B, T, H, D) against `rope_float64`; tables
    (B, T, 1, D) with `per_row` positions (each row shifted), else one (1, T, 1, D)."""
    gen = torch.Generator().manual_seed(D)
    x = torch.randn(B, T, H, D, generator=gen).requires_grad_()
    positions = torch.arange(T)[None] * 7
    if per_row:
        positions = positions + torch.arange(B)[:, None] * 1000
    cos, sin = RotaryEmbedding(D, 10000.0)(positions, torch.float32)
    switched_on = os.environ.get(rope_module.ENV_SWITCH, "1") != "0"
    assert rope_module._fusable(x, cos) == (switched_on and kernels.has_op("rope"))
    grad = torch.randn(B, T, H, D, generator=gen)
    out = apply_rope(x, cos, sin)
    out.backward(grad)
    expected, expected_dx = rope_float64(x.detach(), cos, sin, grad)
    # |out| <= |x1| + |x2| per pair: float32 rounding of a few products
    assert (out.double() - expected).abs().max() <= 1e-6 * x.detach().abs().max() * 2
    assert (x.grad.double() - expected_dx).abs().max() <= 1e-6 * grad.abs().max() * 2


# D = 6: a half (3) that is no whole vector; tables per sequence or one for all
@pytest.mark.parametrize("B,T,H,D,per_row", [(2, 9, 3, 64, False), (3, 17, 2, 64, True),
                                             (1, 5, 4, 6, False), (12, 256, 6, 64, True)])
@pytest.mark.parametrize("switch", ["1", "0"])
def test_rope_equals_the_float64_formula_fused_or_not(monkeypatch, B, T, H, D, per_row, switch):
    monkeypatch.setenv(rope_module.ENV_SWITCH, switch)
    if switch == "1" and not kernels.has_op("rope"):
        pytest.skip("zenlm's kernels are unavailable here")
    check_rope(B, T, H, D, per_row)


def test_rope_with_other_layouts_uses_pytorchs_ops(kernel):
    x = torch.randn(2, 4, 3, 8).transpose(1, 2)  # not contiguous
    cos, sin = RotaryEmbedding(8, 10000.0)(torch.arange(3)[None], torch.float32)
    assert not rope_module._fusable(x, cos)
    assert not rope_module._fusable(x.contiguous().double(), cos.double())
    assert rope_module._fusable(x.contiguous(), cos)


def check_rms_norm(shape: tuple[int, ...], threads: int = 1) -> None:
    """RMSNorm's gradients on x `shape` (..., D) against the float64 formula: with
    r = (mean(x^2) + eps)^-1/2 per row, dx = r g w - x r^3 sum(g w x) / D and
    dw = sum over rows of g x r."""
    gen = torch.Generator().manual_seed(shape[-1])
    norm = RMSNorm(shape[-1], eps=1e-5)
    norm.weight.data = torch.randn(shape[-1], generator=gen)
    x = (torch.randn(shape, generator=gen) * 3).requires_grad_()
    grad = torch.randn(shape, generator=gen)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        norm(x).backward(grad)
    finally:
        torch.set_num_threads(before)
    x64, w, g = x.detach().double(), norm.weight.detach().double(), grad.double()
    r = 1 / torch.sqrt(x64.square().mean(-1, keepdim=True) + 1e-5)
    dx = r * g * w - x64 * r**3 * (g * w * x64).sum(-1, keepdim=True) / shape[-1]
    dw = (g * x64 * r).reshape(-1, shape[-1]).sum(0)
    assert (x.grad.double() - dx).abs().max() <= 1e-6 * dx.abs().max()
    assert (norm.weight.grad.double() - dw).abs().max() <= 1e-6 * dw.abs().max()


# D = 13: rows that are no whole vector; 2 threads: dw summed over threads' partial sums
@pytest.mark.parametrize("shape,threads", [((5, 13), 1), ((2, 7, 384), 1), ((12, 256, 384), 2)])
@pytest.mark.parametrize("switch", ["1", "0"])
def test_rms_norm_gradients_equal_the_float64_formula_fused_or_not(monkeypatch, shape, threads,
                                                                   switch):
    monkeypatch.setenv(norm_module.ENV_SWITCH, switch)
    if switch == "1" and not kernels.has_op("rms_norm_backward"):
        pytest.skip("zenlm's kernels are unavailable here")
    check_rms_norm(shape, threads)


FORCED_CHECK = """
import json, torch
from tests.kernels.test_elementwise_kernels import (assert_close_to_formula, check_rms_norm,
                                                    check_rope, inputs, run_swiglu)
from zenlm import kernels
from zenlm.cpu import cpu_info
fns = []
for shape in [(7,), (2, 5, 37), (4, 16385)]:
    gate, up, grad = inputs(shape, seed=len(shape))
    out, d_gate, d_up, fn = run_swiglu(gate, up, grad)
    assert_close_to_formula(gate, up, grad, out, d_gate, d_up)
    fns.append(fn)
check_rope(3, 17, 2, 64, per_row=True)
check_rope(1, 5, 4, 6, per_row=False)
check_rms_norm((5, 13))
check_rms_norm((2, 7, 384), threads=2)
print(json.dumps({"level": cpu_info().level, "path": kernels.load(), "fns": fns,
                  "rope": kernels.has_op("rope"),
                  "rms_norm": kernels.has_op("rms_norm_backward")}))
"""


def test_the_avx2_build_computes_the_formulas_too():
    """SwiGLU, RoPE and RMSNorm's backward forced to AVX2 in a fresh process (ZENLM_CPU is read before torch loads): the
    library built with AVX2 instructions only gives the same numbers."""
    if cpu_info().detected in ("generic", "avx2"):
        pytest.skip("the native test above already ran this CPU's only kernel level")
    if not swiglu_module.kernel_available():
        pytest.skip("zenlm's kernels are unavailable here")
    env = dict(os.environ, ZENLM_CPU="avx2", PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run([sys.executable, "-c", FORCED_CHECK], env=env, capture_output=True,
                         text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"level": "avx2", "path": "avx2", "fns": ["_SwiGLUBackward"] * 3,
                      "rope": True, "rms_norm": True}


NO_KERNEL_CHECK = """
import json, torch
from tests.kernels.test_elementwise_kernels import (assert_close_to_formula, check_rms_norm,
                                                    check_rope, inputs, run_swiglu)
from zenlm import kernels
gate, up, grad = inputs((2, 5, 37))
out, d_gate, d_up, fn = run_swiglu(gate, up, grad)
assert_close_to_formula(gate, up, grad, out, d_gate, d_up)
check_rope(3, 17, 2, 64, per_row=True)
check_rms_norm((2, 7, 384))
print(json.dumps({"ops": [kernels.has_op(op) for op in ("swiglu", "rope", "rms_norm_backward")],
                  "fn": fn}))
"""


def test_without_the_kernels_the_layers_compute_the_formulas_with_pytorch(tmp_path):
    """ZENLM_KERNELS=0 (as with no compiler or a generic CPU): no op is loaded, and SwiGLU,
    RoPE and RMSNorm train on PyTorch's ops with the same numbers."""
    env = dict(os.environ, ZENLM_KERNELS="0", ZENLM_KERNEL_CACHE=str(tmp_path),
               PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run([sys.executable, "-c", NO_KERNEL_CHECK], env=env, capture_output=True,
                         text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"ops": [False, False, False], "fn": "MulBackward0"}
