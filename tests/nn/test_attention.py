"""The attention module (default kernel: SDPA) against attention written out slowly in float64.

The CPU inference kernels are tested in test_cpu_attention.py, the masks in test_masks.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from zenlm.nn import Attention, build_mask
from zenlm.nn.attention import sdpa


def slow_attention(attn: Attention, x, context=None, allowed=None):
    """softmax(q k^T / sqrt(d)) v, head by head, in float64, with explicit KV-head sharing."""
    x = x.double()
    source = x if context is None else context.double()
    B, T, _ = x.shape
    S = source.shape[1]
    H, Hkv, D = attn.n_heads, attn.n_kv_heads, attn.head_dim
    w = {n: (getattr(attn, n).weight.double(), getattr(attn, n).bias) for n in "qkvo"}

    def proj(name, inp):
        weight, bias = w[name]
        out = inp @ weight.T
        return out + bias.double() if bias is not None else out

    q = proj("q", x).view(B, T, H, D)
    k = proj("k", source).view(B, S, Hkv, D)
    v = proj("v", source).view(B, S, Hkv, D)
    out = torch.zeros(B, T, H, D, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            g = h // (H // Hkv)  # the KV head this query head shares
            scores = q[b, :, h] @ k[b, :, g].T / math.sqrt(D)  # (T, S)
            if allowed is not None:
                scores = scores.masked_fill(~allowed[b], float("-inf"))
            out[b, :, h] = torch.softmax(scores, dim=-1) @ v[b, :, g]
    return proj("o", out.reshape(B, T, H * D))


@pytest.mark.parametrize("n_heads,n_kv_heads", [(4, 4), (4, 2), (4, 1)])
def test_causal_self_attention_matches_float64(n_heads, n_kv_heads):
    attn = Attention(32, n_heads, n_kv_heads, 8, qkv_bias=True, out_bias=True)
    x = torch.randn(2, 9, 32)
    causal = torch.ones(9, 9, dtype=torch.bool).tril().expand(2, 9, 9)
    ours = attn(x, is_causal=True)
    assert torch.allclose(ours.double(), slow_attention(attn, x, allowed=causal), atol=1e-5)


def test_bidirectional_padding_does_not_change_real_tokens():
    attn = Attention(32, 4, 4, 8)
    x = torch.randn(1, 6, 32)
    padded = torch.cat([x, torch.randn(1, 4, 32)], dim=1)
    mask, is_causal = build_mask(padding=torch.tensor([[1] * 6 + [0] * 4]), query_len=10,
                                 key_len=10, causal=False)
    assert not is_causal
    assert torch.allclose(attn(padded, mask=mask)[:, :6], attn(x), atol=1e-6)


def test_cross_attention_matches_float64():
    attn = Attention(32, 4, 2, 8, d_context=24)
    x, context = torch.randn(2, 5, 32), torch.randn(2, 7, 24)
    ours = attn(x, context=context)
    assert torch.allclose(ours.double(), slow_attention(attn, x, context=context), atol=1e-5)


def test_mask_of_a_padding_query_is_finite():
    mask, _ = build_mask(padding=torch.tensor([[0, 0, 1, 1]]), query_len=4, key_len=4,
                         causal=True)
    assert mask[0, 0].any(dim=-1).all()
    attn = Attention(16, 2, 2, 8)
    assert torch.isfinite(attn(torch.randn(1, 4, 16), mask=mask)).all()


def test_sliding_window_mask():
    mask = build_mask(query_len=5, key_len=5, causal=True, sliding_window=2)[0][0, 0]
    expected = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 1, 1, 0, 0],
                             [0, 0, 1, 1, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask, expected)


def test_the_default_kernel_is_sdpa_and_shown():
    attn = Attention(32, 4, 2, 8)
    assert attn.kernel is sdpa
    assert "kernel=sdpa" in repr(attn)


def test_kv_heads_must_divide_heads():
    with pytest.raises(ValueError, match="n_kv_heads=3"):
        Attention(32, 4, 3, 8)
