"""`build_mask` against the rule written out slot by slot."""

from __future__ import annotations

import itertools

import pytest
import torch

from zenlm.nn import build_mask
from zenlm.nn.masks import source_mask


def slow_allowed(first, padding, T, S, causal, window):
    """(B, T, S) bools: query t of row b sits at slot first[b] + t; a query allowed
    nothing is opened fully (its row is padding)."""
    B = len(first)
    out = torch.zeros(B, T, S, dtype=torch.bool)
    for b, t, s in itertools.product(range(B), range(T), range(S)):
        slot = first[b] + t
        ok = (not causal or s <= slot) and (window is None or slot - s < window)
        ok = ok and (padding is None or (s < len(padding[b]) and bool(padding[b][s])))
        out[b, t, s] = ok
    for b, t in itertools.product(range(B), range(T)):
        if not out[b, t].any():
            out[b, t] = True
    return out


def dense(mask, B, T, S):
    """The mask as (B, T, S) bools (None: everything allowed)."""
    if mask is None:
        return torch.ones(B, T, S, dtype=torch.bool)
    return mask[:, 0].expand(B, T, S)


CASES = [  # (first query per row, T, S, padding lengths or None, causal, window)
    ([0, 0], 6, 6, None, True, None),  # a fresh causal prompt
    ([0, 0], 6, 6, [6, 3], True, None),  # right padding
    ([0, 0], 5, 5, None, True, 2),  # Mistral's window
    ([0, 0], 5, 5, None, True, 5),  # a window that covers every key: no window
    ([4, 4], 1, 5, None, True, None),  # a decode step
    ([4, 4], 2, 6, None, True, None),  # two new tokens after four
    ([4, 4], 1, 8, None, True, None),  # a decode step reading rounded-up slots
    ([4, 1], 2, 8, None, True, 3),  # ragged rows with a window
    ([3, 1], 1, 6, [5, 6], True, None),  # ragged rows with a padding shorter than S
    ([0, 0], 4, 4, [4, 2], False, None),  # a bidirectional encoder
    ([0, 0], 4, 4, None, False, None),  # nothing to mask
    ([0, 0], 4, 4, [0, 4], True, None),  # an all-padding row stays finite
]


@pytest.mark.parametrize("first,T,S,lengths,causal,window", CASES)
def test_the_mask_is_the_rule(first, T, S, lengths, causal, window):
    B = len(first)
    padding = None if lengths is None else torch.tensor(
        [[1] * n + [0] * (max(lengths) - n) for n in lengths])
    uniform = len(set(first)) == 1
    first_query = first[0] if uniform else torch.tensor(first)
    mask, is_causal = build_mask(query_len=T, key_len=S, causal=causal, first_query=first_query,
                                 padding=padding, sliding_window=window)
    expected = slow_allowed(first, None if padding is None else padding.tolist(), T, S, causal,
                            window)
    if is_causal:  # the kernel's own causal mask: top-left aligned, only when T == S
        assert mask is None and T == S
        assert torch.equal(expected, torch.ones(B, T, S, dtype=torch.bool).tril())
    else:
        assert mask is None or mask.dtype == torch.bool
        assert torch.equal(dense(mask, B, T, S), expected)


def test_queries_default_to_the_last_keys():
    mask, is_causal = build_mask(query_len=2, key_len=5, causal=True)
    assert not is_causal
    assert torch.equal(mask[0, 0], slow_allowed([3], None, 2, 5, True, None)[0])


@pytest.mark.parametrize("causal", [True, False])
def test_a_bias_carries_the_mask_at_the_dtype_minimum(causal):
    """T5: the position bias is the mask; forbidden keys get finfo.min, not -inf."""
    bias = torch.randn(2, 3, 4, 4, dtype=torch.bfloat16)
    padding = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    mask, is_causal = build_mask(query_len=4, key_len=4, causal=causal, padding=padding,
                                 bias=bias)
    assert not is_causal and mask.dtype == torch.bfloat16 and mask.shape == (2, 3, 4, 4)
    allowed = slow_allowed([0, 0], padding.tolist(), 4, 4, causal, None)[:, None]
    assert torch.equal(mask[allowed.expand_as(mask)], bias[allowed.expand_as(bias)])
    assert (mask[~allowed.expand_as(mask)] == torch.finfo(torch.bfloat16).min).all()


def test_a_bias_alone_is_returned_as_it_is():
    bias = torch.randn(1, 2, 3, 3)
    mask, is_causal = build_mask(query_len=3, key_len=3, causal=False, bias=bias)
    assert mask is bias and not is_causal


def test_source_mask():
    assert source_mask(None) is None
    mask = source_mask(torch.tensor([[1, 1, 0], [1, 1, 1]]))
    assert mask.shape == (2, 1, 1, 3)
    assert mask[:, 0, 0].tolist() == [[True, True, False], [True, True, True]]
