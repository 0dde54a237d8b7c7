"""Padding ragged token lists into batches."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_ids(
    rows: Sequence[Sequence[int]], pad_id: int, *, max_length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists into one batch.

    Args:
        rows: N lists of token ids.
        pad_id: Id written into padding slots.
        max_length: Pad to this length (default: the longest row); longer rows are an error.

    Returns:
        ids (N, T) long and attention_mask (N, T) long, 1 on real tokens.
    """
    longest = max((len(r) for r in rows), default=0)
    length = max_length if max_length is not None else longest
    if longest > length:
        raise ValueError(f"a row has {longest} tokens, more than max_length={length}")
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
        mask[index, : len(row)] = 1
    return ids, mask


def pad_labels(rows: Sequence[Sequence[int]], length: int, ignore: int = -100) -> torch.Tensor:
    """Right-pad per-token labels (N, T) with `ignore` (cross_entropy's ignore_index)."""
    out = torch.full((len(rows), length), ignore, dtype=torch.long)
    for index, row in enumerate(rows):
        out[index, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
    return out


def truncate_keep_last(ids: list[int], max_length: int, keep_last: bool) -> list[int]:
    """Cut `ids` to `max_length`, keeping the final special token (e.g. [SEP]) if asked."""
    if len(ids) <= max_length:
        return ids
    return ids[: max_length - 1] + ids[-1:] if keep_last else ids[:max_length]
