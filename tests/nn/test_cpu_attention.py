"""Every attention kernel against softmax(q k^T x scale + bias) v written out in float64."""

from __future__ import annotations

import math

import pytest
import torch

from zenlm.nn import Attention, KVCache, build_mask
from zenlm.nn import cpu_attention as cpu
from zenlm.nn.attention import sdpa

GQA = [(4, 4), (6, 2), (4, 1)]


def reference(q, k, v, mask=None, is_causal=False, scale=None):
    """Head by head in float64; query head h reads KV head h // (H / Hkv)."""
    B, H, T, D = q.shape
    group = H // k.shape[1]
    scale = 1 / math.sqrt(D) if scale is None else scale
    out = torch.zeros(B, H, T, D, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            keys, values = k[b, h // group].double(), v[b, h // group].double()  # (S, D)
            scores = q[b, h].double() @ keys.T * scale  # (T, S)
            if is_causal:
                scores = scores.masked_fill(torch.ones_like(scores).triu(1).bool(), -math.inf)
            if mask is not None:
                m = mask[b % mask.shape[0], h % mask.shape[1]]  # (T, S)
                scores = scores.masked_fill(~m, -math.inf) if m.dtype == torch.bool \
                    else scores + m.double()
            out[b, h] = torch.softmax(scores, dim=-1) @ values
    return out


def small_query(q, k, v, mask, is_causal, scale):
    assert not is_causal or q.shape[2] == 1
    return cpu.small_query_attention(q, k, v, mask, scale)


KERNELS = {"sdpa": sdpa, "small_query": small_query, "cpu_attention": cpu.cpu_attention}


def make_mask(kind, B, H, T, S, dtype=torch.float32):
    """None, boolean (B, 1, T, S), a per-head bias (B, H, T, S) with masked keys at the
    dtype's minimum (T5), or a bias shared by rows and heads (1, 1, T, S)."""
    if kind == "none":
        return None
    allowed = torch.rand(B, 1, T, S) < 0.7
    allowed[..., 0] = True  # every query sees something
    if kind == "bool":
        return allowed
    if kind == "bias":
        return torch.randn(B, H, T, S, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return torch.randn(1, 1, T, S, dtype=dtype)


@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("heads", GQA)
@pytest.mark.parametrize("kind", ["none", "bool", "bias", "shared-bias"])
@pytest.mark.parametrize("scale", [None, 1.0])
def test_few_queries_match_float64(kernel, heads, kind, scale):
    H, Hkv = heads
    q = torch.randn(2, H, 3, 8)
    k, v = torch.randn(2, Hkv, 7, 8), torch.randn(2, Hkv, 7, 8)
    mask = make_mask(kind, 2, H, 3, 7)
    scale_value = 1 / math.sqrt(8) if scale is None else scale
    ours = KERNELS[kernel](q, k, v, mask, False, scale_value)
    assert ours.shape == (2, H, 3, 8)
    assert torch.allclose(ours.double(), reference(q, k, v, mask, scale=scale), atol=1e-5)


@pytest.mark.parametrize("kernel", ["sdpa", "cpu_attention"])
@pytest.mark.parametrize("heads", GQA)
@pytest.mark.parametrize("T", [1, 9, cpu.SMALL_QUERY + 3])
def test_causal_prompts_match_float64(kernel, heads, T):
    H, Hkv = heads
    q, k, v = torch.randn(1, H, T, 8), torch.randn(1, Hkv, T, 8), torch.randn(1, Hkv, T, 8)
    ours = KERNELS[kernel](q, k, v, None, True, 0.5)
    assert torch.allclose(ours.double(), reference(q, k, v, is_causal=True, scale=0.5), atol=1e-5)


@pytest.mark.parametrize("heads", [(4, 4), (6, 2), (4, 1)])
@pytest.mark.parametrize("T,block", [(11, 4), (8, 4), (3, 4), (7, 1)])
def test_blocked_causal_attention_matches_float64(heads, T, block):
    H, Hkv = heads
    q = torch.randn(2, H, T, 8, dtype=torch.float64)
    k, v = (torch.randn(2, Hkv, T, 8, dtype=torch.float64) for _ in range(2))
    ours = cpu.blocked_causal_attention(q, k, v, block=block, scale=0.3)
    assert ours.shape == (2, H, T, 8)
    assert torch.allclose(ours, reference(q, k, v, is_causal=True, scale=0.3), atol=1e-12)


def _relative_error(ours, expected):
    return ((ours.double() - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize("kind", ["none", "bool", "bias"])
def test_bfloat16_few_queries_within_bfloat16_rounding(kind):
    q = torch.randn(2, 6, 2, 16).bfloat16()
    k, v = torch.randn(2, 2, 40, 16).bfloat16(), torch.randn(2, 2, 40, 16).bfloat16()
    mask = make_mask(kind, 2, 6, 2, 40, dtype=torch.bfloat16)
    expected = reference(q, k, v, mask, scale=0.25)
    ours = cpu.cpu_attention(q, k, v, mask, False, 0.25)
    assert ours.dtype == torch.bfloat16
    assert _relative_error(ours, expected) < 2e-2


def test_bfloat16_prompt_takes_the_blocked_path_and_keeps_its_accuracy(monkeypatch):
    T = cpu.QUERY_BLOCK + 37
    q = torch.randn(1, 6, T, 16).bfloat16()
    k, v = torch.randn(1, 2, T, 16).bfloat16(), torch.randn(1, 2, T, 16).bfloat16()
    expected = reference(q, k, v, is_causal=True, scale=0.25)
    through_sdpa = sdpa(q, k, v, None, True, 0.25)

    def no_sdpa(*args, **kwargs):
        raise AssertionError("a long bfloat16 causal prompt should not reach SDPA")

    monkeypatch.setattr(cpu, "sdpa", no_sdpa)
    blocked = cpu.cpu_attention(q, k, v, None, True, 0.25)
    sdpa_error, blocked_error = _relative_error(through_sdpa, expected), _relative_error(
        blocked, expected)
    print(f"relative error: blocked {blocked_error:.2e}, SDPA {sdpa_error:.2e}")
    assert blocked_error < 2e-2 and blocked_error < 3 * sdpa_error


@pytest.mark.parametrize("dtype,T,is_causal,path", [
    (torch.float32, 1, False, "small_query_attention"),  # a decode step
    (torch.float32, cpu.SMALL_QUERY, False, "small_query_attention"),  # a draft to verify
    (torch.float32, 1, True, "small_query_attention"),  # a one-token prompt
    (torch.float32, 5, True, "sdpa"),  # a short prompt: SDPA's causal mask
    (torch.float32, cpu.QUERY_BLOCK + 1, True, "sdpa"),  # float32 batched matmuls are slower
    (torch.bfloat16, cpu.QUERY_BLOCK + 1, True, "blocked_causal_attention"),
    (torch.bfloat16, cpu.QUERY_BLOCK, True, "sdpa"),  # one block: SDPA's one call is cheaper
    (torch.bfloat16, cpu.SMALL_QUERY + 1, False, "sdpa"),
])
def test_the_dispatch_rule(monkeypatch, dtype, T, is_causal, path):
    taken = []
    for name in ("sdpa", "small_query_attention", "blocked_causal_attention"):
        real = getattr(cpu, name)
        monkeypatch.setattr(cpu, name, lambda *a, _n=name, _f=real, **kw: (
            taken.append(_n), _f(*a, **kw))[1])
    q, k = torch.randn(1, 4, T, 8, dtype=dtype), torch.randn(1, 2, T, 8, dtype=dtype)
    cpu.cpu_attention(q, k, k.clone(), None, is_causal, 0.3)
    assert taken == [path]


def slow_rows(attn, rows):
    """Causal self-attention of each row's whole sequence (T_b, d) through attn's
    projections, in float64: the oracle for a cache of ragged rows."""
    H, Hkv, D = attn.n_heads, attn.n_kv_heads, attn.head_dim
    w = {n: getattr(attn, n).weight.double() for n in "qkvo"}
    outs = []
    for x in rows:
        x = x.double()
        q = (x @ w["q"].T).view(-1, H, D).transpose(0, 1)[None]  # (1, H, T, D)
        k = (x @ w["k"].T).view(-1, Hkv, D).transpose(0, 1)[None]
        v = (x @ w["v"].T).view(-1, Hkv, D).transpose(0, 1)[None]
        out = reference(q, k, v, is_causal=True, scale=attn.scale)  # (1, H, T, D)
        outs.append(out[0].transpose(0, 1).reshape(-1, H * D) @ w["o"].T)
    return outs


@pytest.mark.parametrize("kernel", ["sdpa", "cpu_attention"])
@pytest.mark.parametrize("key_multiple", [1, 8])
@pytest.mark.parametrize("heads", [(4, 2), (4, 1)])
def test_cache_with_ragged_rows_matches_float64(kernel, key_multiple, heads):
    """Rows of 5 and 2 cached tokens, then 2 new tokens each at their own slots; slots
    past a row's end (its padding, the rounded-up key length) hold stale values."""
    attn = Attention(32, *heads, 8)
    attn.kernel = KERNELS[kernel]
    lengths, new = [5, 2], 2
    rows = [torch.randn(n + new, 32) for n in lengths]
    cache = KVCache(1, 2, 16, heads[1], 8, key_multiple=key_multiple)
    prompt = torch.stack([torch.cat([r[:n], torch.randn(5 - n, 32)]) for r, n in
                          zip(rows, lengths, strict=True)])  # (2, 5, 32), right padded
    padding = torch.tensor([[1] * n + [0] * (5 - n) for n in lengths])
    with torch.no_grad():
        mask, is_causal = build_mask(query_len=5, key_len=5, causal=True, padding=padding)
        attn(prompt, mask=mask, is_causal=is_causal, cache=cache)
        cache.advance(5)
        cache.set_lengths(lengths)
        key_len = cache.key_length(new)
        mask, is_causal = build_mask(query_len=new, key_len=key_len, causal=True,
                                     first_query=cache.lengths)
        step = torch.stack([r[n:] for r, n in zip(rows, lengths, strict=True)])  # (2, 2, 32)
        ours = attn(step, mask=mask, is_causal=is_causal, cache=cache)
    assert key_len == (7 if key_multiple == 1 else 8)
    for b, expected in enumerate(slow_rows(attn, rows)):
        assert torch.allclose(ours[b].double(), expected[-new:], atol=1e-5)


def test_the_transform_installs_and_removes_the_kernel():
    blocks = torch.nn.ModuleList([Attention(16, 2, 2, 8), Attention(16, 2, 1, 8, d_context=8)])
    cpu.use_cpu_attention(blocks)
    assert all(a.kernel is cpu.cpu_attention for a in blocks)
    assert "kernel=cpu_attention" in repr(blocks)
    cpu.use_cpu_attention(blocks, kernel=sdpa)
    assert all(a.kernel is sdpa for a in blocks)
