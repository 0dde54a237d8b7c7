"""Position encodings against their formulas, written out in float64."""

from __future__ import annotations

import math

import torch

from zenlm.nn import RMSNorm, RotaryEmbedding, SinusoidalPositions, apply_rope
from zenlm.nn.positions import sinusoidal_reference
from zenlm.nn.rope import rope_inv_freq


def test_sinusoidal_matches_paper_formula():
    table = SinusoidalPositions(16)(torch.arange(50)[None])[0]
    for pos in (0, 1, 7, 49):
        for i in range(16):
            assert abs(table[pos, i].item() - sinusoidal_reference(pos, i, 16)) < 1e-5


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
