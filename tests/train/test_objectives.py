"""Masked-LM masking statistics and T5 span corruption, on plain tensors."""

from __future__ import annotations

import math

import pytest
import torch

from zenlm.config import ModelConfig
from zenlm.train.objectives import (
    IGNORE,
    build_for_objective,
    mask_tokens,
    masked_lm_loss,
    span_corruption,
)


def _within_four_sigma(observed: float, p: float, n: int) -> bool:
    """|observed - p| < 4 standard deviations of a mean of n Bernoulli(p) draws (float64)."""
    return abs(observed - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_mask_tokens_80_10_10_within_four_standard_deviations():
    """Each rate against its binomial law: at this size 4 sigma is 0.2 points of the 15%
    and 0.6 points of the 80% (a fixed seed: the test cannot flake, and a rate off by
    half a point fails it)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (1024, 512), generator=g)
    ids[:, 0], ids[:, -1] = 1, 2  # CLS / SEP
    inputs, labels = mask_tokens(ids, mask_id=3, vocab_size=1000, special_ids=[0, 1, 2, 3, 4], generator=g)
    chosen = labels != IGNORE
    assert not chosen[:, 0].any() and not chosen[:, -1].any()
    eligible = ids.shape[0] * (ids.shape[1] - 2)
    n = int(chosen.sum())
    assert _within_four_sigma(n / eligible, 0.15, eligible)
    # A random replacement (drawn from the 995 non-special ids) equals the original 1 time in 995.
    p_kept = 0.1 + 0.1 / 995
    masked = int((inputs[chosen] == 3).sum()) / n
    kept = int((inputs[chosen] == ids[chosen]).sum()) / n
    assert _within_four_sigma(masked, 0.8, n)
    assert _within_four_sigma(kept, p_kept, n)
    assert _within_four_sigma(1 - masked - kept, 1 - 0.8 - p_kept, n)
    assert torch.equal(labels[chosen], ids[chosen]) and torch.equal(inputs[~chosen], ids[~chosen])
    assert not torch.isin(inputs[chosen & (inputs != 3)], torch.tensor([0, 1, 2, 4])).any()


def test_whole_word_masking_masks_all_pieces_of_a_word():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(10, 500, (8, 300), generator=g)
    starts = torch.rand(8, 300, generator=g) < 0.4
    starts[:, 0] = True
    _, labels = mask_tokens(ids, mask_id=3, vocab_size=500, word_starts=starts, generator=g)
    chosen = labels != IGNORE
    word = starts.long().cumsum(-1)
    for row in range(8):
        for w in word[row].unique():
            in_word = chosen[row][word[row] == w]
            assert in_word.all() or not in_word.any()
    assert 0.1 < chosen.float().mean() < 0.2


def test_span_corruption_reconstructs_the_text():
    g = torch.Generator().manual_seed(0)
    ids = list(range(100, 200))
    sentinels = list(range(32000, 31900, -1))
    inputs, targets = span_corruption(ids, sentinel_ids=sentinels, eos_id=1, generator=g)
    assert inputs[-1] == targets[-1] == 1
    noise = len(targets) - 1 - sum(t in sentinels for t in targets)
    assert noise == 15  # round(100 * 0.15)
    # Put each span back in place of its sentinel: the original sequence.
    spans, current = {}, None
    for t in targets[:-1]:
        if t in sentinels:
            current = t
            spans[t] = []
        else:
            spans[current].append(t)
    rebuilt = [x for t in inputs[:-1] for x in (spans[t] if t in sentinels else [t])]
    assert rebuilt == ids
    assert 3 <= len(spans) <= 6  # mean span length 3


def test_span_corruption_objective_batches_sources_and_targets_that_rebuild_the_blocks():
    from zenlm.train.objectives import SpanCorruptionObjective

    sentinels = list(range(100, 120))
    objective = SpanCorruptionObjective(sentinel_ids=sentinels, eos_id=1, pad_id=0)
    ids = torch.randint(2, 50, (4, 40), generator=torch.Generator().manual_seed(0))
    src, mask, labels = objective.corrupt(ids, torch.Generator().manual_seed(1))
    for row in range(4):
        source = src[row][mask[row].bool()].tolist()
        target = [t for t in labels[row].tolist() if t != IGNORE]
        assert source[-1] == target[-1] == 1  # both end with EOS
        spans, current = {}, None  # sentinel -> the tokens it hid
        for token in target[:-1]:
            if token in sentinels:
                current = spans.setdefault(token, [])
            else:
                current.append(token)
        rebuilt = [t for s in source[:-1] for t in (spans[s] if s in sentinels else [s])]
        assert rebuilt == ids[row].tolist()
        assert 3 <= sum(len(v) for v in spans.values()) <= 9  # ~15% of 40 tokens
        assert (src[row][~mask[row].bool()] == 0).all()  # padding after the source


def test_resolve_objective_picks_span_corruption_for_encoder_decoders():
    from zenlm.config import ModelConfig
    from zenlm.train.objectives import resolve_objective

    config = ModelConfig(vocab_size=50, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                         arch="encoder-decoder")
    assert resolve_objective("auto", config) == "span"
    with pytest.raises(ValueError, match="train.objective=causal needs model.arch=decoder"):
        resolve_objective("causal", config)


def test_masked_lm_loss_on_masked_positions_only_equals_the_full_loss():
    """The head run on the masked positions alone gives the loss and gradients of the
    definition: cross-entropy of every position's logits, non-masked positions ignored."""
    config = ModelConfig(vocab_size=40, d_model=16, n_layers=2, n_heads=2, d_ff=32,
                         arch="encoder", positions="learned", max_seq_len=24)
    torch.manual_seed(0)
    model = build_for_objective(config, "mlm")
    ids = torch.randint(3, 40, (3, 24))
    inputs, labels = mask_tokens(ids, mask_id=2, vocab_size=40, special_ids=[0, 1, 2],
                                 generator=torch.Generator().manual_seed(1))
    assert 0 < int((labels != IGNORE).sum()) < labels.numel()

    fast = masked_lm_loss(model, inputs, labels)
    fast_grads = torch.autograd.grad(fast, list(model.parameters()))
    logits = model(inputs)  # (B, T, V): every position, as the definition reads
    full = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(),
                                             ignore_index=IGNORE)
    full_grads = torch.autograd.grad(full, list(model.parameters()))
    torch.testing.assert_close(fast, full, rtol=1e-6, atol=1e-6)
    for got, expected in zip(fast_grads, full_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
