"""zenlm's fused SwiGLU (silu(gate) * up and its backward) against the float64 formula."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zenlm.cpu import cpu_info
from zenlm.nn import swiglu as swiglu_module
from zenlm.nn.mlp import MLP
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


FORCED_CHECK = """
import json, torch
from tests.kernels.test_swiglu_kernel import assert_close_to_formula, inputs, run_swiglu
from zenlm import kernels
from zenlm.cpu import cpu_info
fns = []
for shape in [(7,), (2, 5, 37), (4, 16385)]:
    gate, up, grad = inputs(shape, seed=len(shape))
    out, d_gate, d_up, fn = run_swiglu(gate, up, grad)
    assert_close_to_formula(gate, up, grad, out, d_gate, d_up)
    fns.append(fn)
print(json.dumps({"level": cpu_info().level, "path": kernels.load(), "fns": fns}))
"""


def test_the_avx2_build_computes_the_formula_too():
    """Forced to AVX2 in a fresh process (ZENLM_CPU is read before torch loads): the
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
    assert report == {"level": "avx2", "path": "avx2", "fns": ["_SwiGLUBackward"] * 3}
