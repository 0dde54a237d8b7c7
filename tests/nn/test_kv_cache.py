"""The KV cache's slot bookkeeping."""

from __future__ import annotations

import pytest
import torch

from zenlm.nn import KVCache


def test_key_length_rounds_up_only_once_something_is_cached():
    cache = KVCache(1, 1, 100, 1, 4, key_multiple=64)
    assert cache.key_length(41) == 41  # a prompt sees exactly its own keys
    k = torch.randn(1, 1, 41, 4)
    keys, _ = cache.update(0, k, k)
    assert keys.shape[2] == 41
    cache.advance(41)
    assert cache.key_length(1) == 64
    keys, _ = cache.update(0, k[:, :, :1], k[:, :, :1])
    assert keys.shape[2] == 64 and torch.equal(keys[:, :, 41], k[:, :, 0])
    cache.advance(1)
    assert cache.key_length(22) == 64 and cache.key_length(23) == 100  # never past max_len


def test_narrowed_cache_keeps_the_key_multiple():
    cache = KVCache(1, 4, 100, 1, 4, key_multiple=16)
    assert cache.narrow_rows(2).key_multiple == 16


def test_key_multiple_must_be_positive():
    with pytest.raises(ValueError, match="key_multiple must be >= 1, got 0"):
        KVCache(1, 1, 8, 1, 4, key_multiple=0)
