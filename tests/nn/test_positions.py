"""Position encodings against their formulas, written out in float64."""

from __future__ import annotations

import math

import pytest
import torch

from zenlm.config import ModelConfig
from zenlm.models import build_model
from zenlm.nn import RMSNorm, RotaryEmbedding, SinusoidalPositions, apply_rope
from zenlm.nn.rope import rope_inv_freq


def sinusoid_float64(position: int, dim: int, base: float = 10000.0) -> list[float]:
    """One row of the table, written out: the sines of pos / base^(2i/dim), then the cosines.

    This is Marian's layout (transformers' MarianSinusoidalPositionalEmbedding): the
    paper's interleaved PE[pos, 2i], PE[pos, 2i+1] with the features permuted.
    """
    angles = [position / base ** (2 * i / dim) for i in range(dim // 2)]
    return [math.sin(a) for a in angles] + [math.cos(a) for a in angles]


def test_sinusoidal_matches_the_formula_in_float64():
    dim, positions = 16, [0, 1, 7, 49, 511, 2047, 10_000]
    table = SinusoidalPositions(dim)(torch.tensor([positions]))[0]  # (T, dim)
    assert table.dtype == torch.float32
    expected = torch.tensor([sinusoid_float64(p, dim) for p in positions], dtype=torch.float64)
    torch.testing.assert_close(table.double(), expected, rtol=0, atol=1e-6)


def _tiny(positions: str, arch: str = "decoder") -> ModelConfig:
    return ModelConfig(vocab_size=50, d_model=16, n_layers=2, n_heads=2, d_ff=32, arch=arch,
                       positions=positions)


def test_a_sinusoidal_decoder_sees_positions_and_a_position_free_one_does_not():
    ids = torch.randint(0, 50, (1, 6), generator=torch.Generator().manual_seed(0))
    shifted = torch.arange(6)[None] + 5
    for kind, moves in (("sinusoidal", True), ("none", False)):
        torch.manual_seed(0)
        model = build_model(_tiny(kind)).eval()
        with torch.no_grad():
            same = torch.allclose(model(ids), model(ids, position_ids=shifted), atol=1e-6)
        assert same != moves, f"positions={kind}: shifting the positions moved={not same}"


def test_a_sinusoidal_encoder_is_not_permutation_equivariant():
    """Without positions an encoder's output follows a permutation of its input;
    with them it must not (the positions reach the blocks)."""
    ids = torch.randint(0, 50, (1, 7), generator=torch.Generator().manual_seed(1))
    order = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    for kind, equivariant in (("none", True), ("sinusoidal", False)):
        torch.manual_seed(0)
        model = build_model(_tiny(kind, arch="encoder")).eval()
        with torch.no_grad():
            permuted_after, permuted_before = model(ids)[:, order], model(ids[:, order])
        assert torch.allclose(permuted_after, permuted_before, atol=1e-5) == equivariant, kind


def test_a_bfloat16_sinusoidal_model_keeps_its_dtype():
    model = build_model(_tiny("sinusoidal")).to(torch.bfloat16)
    assert model(torch.tensor([[1, 2, 3]])).dtype == torch.bfloat16


def test_sinusoidal_positions_need_an_even_width():
    with pytest.raises(ValueError, match="even d_model, got 15"):
        ModelConfig(vocab_size=50, d_model=15, n_layers=1, n_heads=3, d_ff=8,
                    positions="sinusoidal")


def test_rope_rotates_pairs_by_position_times_frequency():
    head_dim, theta = 8, 10000.0
    rope = RotaryEmbedding(head_dim, theta)
    x = torch.randn(1, 5, 1, head_dim)  # (B, T, H, D)
    cos, sin = rope(torch.arange(5)[None], torch.float32)
    ours = apply_rope(x, cos, sin)
    half = head_dim // 2
    for t in range(5):
        for j in range(half):
            angle = t / theta ** (2 * j / head_dim)
            a, b = x[0, t, 0, j].item(), x[0, t, 0, j + half].item()
            assert abs(ours[0, t, 0, j].item() - (a * math.cos(angle) - b * math.sin(angle))) < 1e-5
            assert abs(ours[0, t, 0, j + half].item() - (b * math.cos(angle) + a * math.sin(angle))) < 1e-5


def test_rope_gradient_is_the_numerical_derivative_in_float64():
    """apply_rope's hand-written backward, checked by finite differences (gradcheck)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 2, 8, dtype=torch.float64, requires_grad=True)
    angles = torch.randn(2, 3, 1, 4, dtype=torch.float64)
    angles = torch.cat((angles, angles), dim=-1)
    assert torch.autograd.gradcheck(lambda t: apply_rope(t, angles.cos(), angles.sin()), (x,))
    # and the same gradient as autograd through the rotation written out here
    upstream = torch.randn(2, 3, 2, 8, dtype=torch.float64)
    (grad,) = torch.autograd.grad(apply_rope(x, angles.cos(), angles.sin()), x, upstream)
    x1, x2 = x[..., :4], x[..., 4:]
    written = x * angles.cos() + torch.cat((-x2, x1), dim=-1) * angles.sin()
    (expected,) = torch.autograd.grad(written, x, upstream)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)


def test_rope_relative_property():
    """q.k after RoPE depends only on the distance between positions."""
    rope = RotaryEmbedding(16, 10000.0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(i, j):
        cq, sq = rope(torch.tensor([[i]]), torch.float32)
        ck, sk = rope(torch.tensor([[j]]), torch.float32)
        return (apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum().item()

    assert abs(score(3, 1) - score(12, 10)) < 1e-4


def test_linear_rope_scaling_divides_frequencies():
    plain = rope_inv_freq(16, 10000.0, None)
    scaled = rope_inv_freq(16, 10000.0, {"rope_type": "linear", "factor": 4.0})
    assert torch.allclose(scaled, plain / 4)


def test_rmsnorm_matches_formula():
    norm = RMSNorm(8, eps=1e-6)
    norm.weight.data = torch.randn(8)
    x = torch.randn(3, 8, dtype=torch.float64)
    expected = norm.weight.double() * x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-6)
    assert torch.allclose(norm(x.float()).double(), expected, atol=1e-5)


def test_rmsnorm_gradients_match_the_formula_in_float64():
    """RMSNorm's written-out float32 backward against autograd of the formula in float64."""
    torch.manual_seed(0)
    norm = RMSNorm(16, eps=1e-6)
    norm.weight.data = torch.randn(16)
    x = torch.randn(2, 5, 16, requires_grad=True)
    upstream = torch.randn(2, 5, 16)
    norm(x).backward(upstream)
    x64 = x.detach().double().requires_grad_()
    w64 = norm.weight.detach().double().requires_grad_()
    y64 = w64 * x64 / torch.sqrt((x64**2).mean(-1, keepdim=True) + 1e-6)
    y64.backward(upstream.double())
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(norm.weight.grad.double(), w64.grad, rtol=1e-4, atol=1e-5)


def test_sinusoidal_equals_transformers_marian_table():
    """The layout the Marian import will need: transformers' own table, to 1e-6."""
    marian = pytest.importorskip("transformers.models.marian.modeling_marian")
    theirs = marian.MarianSinusoidalPositionalEmbedding(600, 32).create_weight()  # (600, 32)
    ours = SinusoidalPositions(32)(torch.arange(600)[None])[0]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
