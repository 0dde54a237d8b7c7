"""Attention probabilities against transformers' `output_attentions=True`, same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zenlm.explain.attention import attention_maps, pool_map, pooling_bins, rollout

TEXT = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def minilm(minilm_lm):
    return minilm_lm


@pytest.fixture(scope="module")
def smollm2(smollm2_subject):
    return smollm2_subject


def _ours(lm, ids):
    tokens = [str(i) for i in ids]
    maps, _ = attention_maps(lm.model, lambda: lm.model(torch.tensor([ids])), tokens, limit=64)
    assert not maps.pooled
    return maps.maps


def test_minilm_attention_equals_transformers(minilm, minilm_folder):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModel.from_pretrained(minilm_folder, attn_implementation="eager").eval()
    ids = minilm.tokenizer.encode(TEXT)
    with torch.no_grad():
        expected = hf(torch.tensor([ids]), output_attentions=True).attentions
    ours = _ours(minilm, ids)
    assert ours.shape == (6, 12, len(ids), len(ids))
    for layer, probs in enumerate(expected):
        torch.testing.assert_close(ours[layer], probs[0], atol=1e-4, rtol=0)


def test_smollm2_attention_equals_transformers_with_gqa(smollm2, hf_smollm2):
    model, _ = hf_smollm2
    ids = smollm2.tokenizer.encode(TEXT)
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            expected = model(torch.tensor([ids]), output_attentions=True).attentions
    finally:
        model.set_attn_implementation(previous)
    ours = _ours(smollm2, ids)
    assert ours.shape == (30, 9, len(ids), len(ids))  # 9 query heads over 3 KV heads
    for layer, probs in enumerate(expected):
        torch.testing.assert_close(ours[layer], probs[0], atol=1e-4, rtol=0)


def test_recording_restores_the_fast_kernels(minilm):
    before = [m.kernel for m in minilm.model.modules() if hasattr(m, "kernel")]
    _ours(minilm, minilm.tokenizer.encode(TEXT))
    assert [m.kernel for m in minilm.model.modules() if hasattr(m, "kernel")] == before


def test_rollout_equals_the_formula_in_float64():
    rng = np.random.default_rng(0)
    L, H, T = 4, 3, 6
    raw = rng.random((L, H, T, T))
    maps = raw / raw.sum(-1, keepdims=True)
    expected = np.eye(T)
    for layer in range(L):  # Abnar & Zuidema: heads averaged, identity added, rows renormalised
        a = maps[layer].mean(0) + np.eye(T)
        a = a / a.sum(-1, keepdims=True)
        expected = a @ expected
    ours = rollout(torch.from_numpy(maps).float()).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-6)
    np.testing.assert_allclose(ours.sum(-1), 1.0, atol=1e-6)


def test_pooling_keeps_rows_stochastic():
    rng = np.random.default_rng(1)
    raw = rng.random((2, 10, 10))
    probs = torch.from_numpy(raw / raw.sum(-1, keepdims=True))
    bins = pooling_bins(10, 4)
    assert bins[0][0] == 0 and bins[-1][1] == 10 and len(bins) == 4
    pooled = pool_map(probs, bins).numpy()
    assert pooled.shape == (2, 4, 4)
    np.testing.assert_allclose(pooled.sum(-1), 1.0, atol=1e-12)
    a, b = bins[1]
    np.testing.assert_allclose(pooled[:, 1, 0], probs.numpy()[:, a:b, 0:bins[0][1]].sum(-1).mean(-1))


def test_recorded_forward_equals_the_fast_kernels(minilm, smollm2):
    """Recording changes what is kept, not what is computed: outputs equal SDPA's/CPU kernels'."""
    for lm in (minilm, smollm2):
        ids = torch.tensor([lm.tokenizer.encode(TEXT)])
        with torch.no_grad():
            fast = lm.model(ids)
            _, recorded = attention_maps(lm.model, lambda m=lm.model, i=ids: m(i), [""] * ids.shape[1], 64)
        torch.testing.assert_close(recorded, fast, atol=1e-4, rtol=1e-4)


def test_long_text_is_pooled_not_refused(smollm2):
    from zenlm.explain.run import explain_text

    text = " ".join(["word"] * 40)
    page, numbers = explain_text(smollm2, text, max_tokens=8)
    assert numbers["tokens"] == 40 and numbers["surprisal_scored_tokens"] == 39
    assert "pooled into 8 bins" in page.html()


@pytest.mark.parametrize("kind", ["causal", "padding", "bias"])
def test_explicit_kernel_equals_sdpa_and_the_float64_softmax(kind):
    from zenlm.nn.attention import sdpa
    from zenlm.nn.attention_probs import explicit_attention

    g = torch.Generator().manual_seed(0)
    B, H, Hkv, T, D = 2, 6, 2, 5, 8
    q, k, v = (torch.randn(B, h, T, D, generator=g) for h in (H, Hkv, Hkv))
    mask, causal = None, kind == "causal"
    if kind == "padding":
        mask = torch.ones(B, 1, T, T, dtype=torch.bool)
        mask[1, :, :, 3:] = False  # row 1's last two keys are padding
    if kind == "bias":
        mask = torch.randn(1, H, T, T, generator=g)
    probs, out = explicit_attention(q, k, v, mask, causal, 0.3)
    torch.testing.assert_close(out, sdpa(q, k, v, mask, causal, 0.3), atol=1e-5, rtol=1e-5)
    kx = k.double().repeat_interleave(H // Hkv, dim=1)  # head h reads KV head h // 3
    scores = (q.double() @ kx.transpose(-1, -2)) * 0.3
    if causal:
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    elif kind == "padding":
        scores = scores.masked_fill(~mask, float("-inf"))
    else:
        scores = scores + mask.double()
    torch.testing.assert_close(probs.double(), torch.softmax(scores, -1), atol=1e-6, rtol=0)
