"""The one attention-mask builder: causal, padded, windowed, bidirectional, biased.

Encoders, decoders (with or without a KV cache of ragged rows) and encoder-decoders
all ask `build_mask` for what `Attention` takes: a mask (or None) and whether the
attention kernel may apply causality itself.

Queries and keys are slots: key s is the token in cache slot s (0 <= s < S), and a
row's T queries sit at slots first_query, ..., first_query + T - 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def build_mask(
    *,
    query_len: int,
    key_len: int,
    causal: bool,
    first_query: int | torch.Tensor | None = None,
    padding: torch.Tensor | None = None,
    sliding_window: int | None = None,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, bool]:
    """The mask of one attention call, and whether the kernel should apply causality.

    A row with nothing to attend to (a padding query) is opened fully, so that
    softmax stays finite there; those positions are padding and never read.

    Args:
        query_len: T, queries per row.
        key_len: S, keys per row (cache slots read, this call's included).
        causal: Forbid attending to later slots.
        first_query: Slot of each row's first query: an int shared by all rows, or (B,)
            (each row's cache length); None for key_len - query_len (the queries are the
            last T keys).
        padding: (B, S') 1 (or True) at real keys, 0 at padding; S' <= S, slots past S'
            count as padding (a cache's rounded-up key length). None if none.
        sliding_window: Also forbid keys this many slots back or more (Mistral).
        bias: Additive scores (B|1, H, T, S) (T5's relative positions), or None.

    Returns:
        (mask, is_causal). mask is None when nothing needs masking (then is_causal says
        whether the kernel's own top-left causal mask is exactly right: T == S), boolean
        (B|1, 1, T, S) True where a query may attend, or with `bias` the bias in its own
        dtype (B|1, H, T, S) with forbidden keys at the dtype's minimum (what T5 adds:
        finite, unlike -inf). is_causal is False whenever mask is not None.
    """
    if first_query is None:
        first_query = key_len - query_len
    if sliding_window is not None and key_len <= sliding_window:
        sliding_window = None  # every key is inside the window
    if bias is None and padding is None and sliding_window is None:
        if not causal:
            return None, False
        if isinstance(first_query, int) and first_query + query_len == key_len:
            if first_query == 0:  # a fresh prompt: the kernel's causal mask is this one
                return None, True
            if query_len == 1:  # one new token sees every slot
                return None, False
    allowed = _allowed(first_query, padding, query_len, key_len, causal, sliding_window)
    if bias is None:
        return allowed, False
    if allowed is None:
        return bias, False
    return bias.masked_fill(~allowed, torch.finfo(bias.dtype).min), False


def source_mask(padding: torch.Tensor | None) -> torch.Tensor | None:
    """Cross-attention's mask (B, 1, 1, S), True at real source tokens, of padding (B, S)."""
    mask, _ = build_mask(query_len=1, key_len=0 if padding is None else padding.shape[1],
                         causal=False, padding=padding)
    return mask


def _allowed(
    first_query: int | torch.Tensor,
    padding: torch.Tensor | None,
    query_len: int,
    key_len: int,
    causal: bool,
    sliding_window: int | None,
) -> torch.Tensor | None:
    """Boolean (B|1, 1, T, S), True where query t may attend to key s; None for all."""
    if not causal and sliding_window is None and padding is None:
        return None
    device = padding.device if padding is not None else None
    if isinstance(first_query, int):
        q_slot = torch.arange(first_query, first_query + query_len, device=device)[None, :, None]
    else:  # (B,) slots, one per row
        device = first_query.device
        steps = torch.arange(query_len, device=device)  # (T,)
        q_slot = first_query.reshape(-1)[:, None, None] + steps[:, None]  # (B, T, 1)
    k_slot = torch.arange(key_len, device=device)[None, None, :]  # (1, 1, S)
    mask = k_slot <= q_slot if causal else torch.ones_like(k_slot <= q_slot)  # (B|1, T, S)
    if sliding_window is not None:
        mask = mask & (q_slot - k_slot < sliding_window)
    mask = mask[:, None]  # (B|1, 1, T, S)
    if padding is not None:
        padding = F.pad(padding.bool(), (0, key_len - padding.shape[1]))  # (B, S)
        mask = mask & padding[:, None, None, :]  # (B, 1, T, S)
    return mask | ~mask.any(dim=-1, keepdim=True)
