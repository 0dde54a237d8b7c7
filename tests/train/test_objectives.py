"""Masked-LM masking statistics and T5 span corruption, on plain tensors."""

from __future__ import annotations

import torch

from zenlm.train.objectives import IGNORE, mask_tokens, span_corruption


def test_mask_tokens_80_10_10_within_one_percent():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (64, 512), generator=g)
    ids[:, 0], ids[:, -1] = 1, 2  # CLS / SEP
    inputs, labels = mask_tokens(ids, mask_id=3, vocab_size=1000, special_ids=[0, 1, 2, 3, 4], generator=g)
    chosen = labels != IGNORE
    assert not chosen[:, 0].any() and not chosen[:, -1].any()
    assert abs(chosen.float().mean().item() * 512 / 510 - 0.15) < 0.01 * 0.15 * 10  # 15% +-0.15 pt
    n = chosen.sum().item()
    masked = (inputs[chosen] == 3).sum().item() / n
    kept = (inputs[chosen] == ids[chosen]).sum().item() / n
    random = 1 - masked - kept
    assert abs(masked - 0.8) < 0.01 and abs(kept - 0.1) < 0.01 and abs(random - 0.1) < 0.01
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
