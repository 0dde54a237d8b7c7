"""One attention module for every architecture.

Self or cross, causal or bidirectional, multi-head / grouped-query / multi-query,
with optional RoPE and KV cache.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zenlm.nn.kv_cache import KVCache
from zenlm.nn.rope import apply_rope


class Attention(nn.Module):
    """Scaled dot-product attention with its four projections.

    Args:
        d_model: Width of the queries' input (and of the output).
        n_heads: Query heads.
        n_kv_heads: Key/value heads (divides n_heads; 1 is MQA, n_heads is MHA).
        head_dim: Size of one head.
        qkv_bias: Biases on the q, k, v projections.
        out_bias: Bias on the output projection.
        d_context: Width of the keys' input for cross-attention (default d_model).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        *,
        qkv_bias: bool = False,
        out_bias: bool = False,
        d_context: int | None = None,
    ) -> None:
        super().__init__()
        if n_heads % n_kv_heads:
            raise ValueError(f"n_heads={n_heads} must be a multiple of n_kv_heads={n_kv_heads}")
        d_context = d_context or d_model
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.q = nn.Linear(d_model, n_heads * head_dim, bias=qkv_bias)
        self.k = nn.Linear(d_context, n_kv_heads * head_dim, bias=qkv_bias)
        self.v = nn.Linear(d_context, n_kv_heads * head_dim, bias=qkv_bias)
        self.o = nn.Linear(n_heads * head_dim, d_model, bias=out_bias)

    def forward(
        self,
        x: torch.Tensor,
        *,
        context: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        """Attend from x to itself (or to `context`).

        Args:
            x: Queries' input (B, T, d_model).
            context: Keys' input (B, S, d_context) for cross-attention; None for self.
            mask: Boolean (B, 1, T, S), True where a query may attend; None for all.
            is_causal: Let SDPA apply the causal mask itself (only when `mask` is None).
            rope: (cos, sin), each (B, 1, T, head_dim), applied to q and k.
            cache: KV cache to append this step's keys/values to (self-attention only).
            layer: This layer's index into `cache`.

        Returns:
            (B, T, d_model).
        """
        B, T, _ = x.shape
        source = x if context is None else context
        q = self.q(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.k(source).view(B, source.shape[1], self.n_kv_heads, self.head_dim)
        v = self.v(source).view(B, source.shape[1], self.n_kv_heads, self.head_dim)
        k, v = k.transpose(1, 2), v.transpose(1, 2)  # (B, Hkv, S, D)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, Hkv, S_total, D)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal and mask is None,
            enable_gqa=self.n_kv_heads != self.n_heads,
        )  # (B, H, T, D)
        return self.o(out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


def attention_mask(
    key_padding: torch.Tensor | None,
    *,
    query_len: int,
    key_len: int,
    causal: bool,
    sliding_window: int | None = None,
) -> torch.Tensor | None:
    """Boolean mask (B|1, 1, T, S), True where query t may attend to key s.

    Queries are the last `query_len` of the `key_len` slots (the cache's new tokens).
    A row with nothing to attend to (a padding query) is opened fully so that SDPA
    returns finite values there; those positions are padding and never read.

    Args:
        key_padding: (B, S) bool/int, 1 for real tokens and 0 for padding; None if none.
        query_len: T.
        key_len: S.
        causal: Forbid attending to later slots.
        sliding_window: Also forbid keys more than this many slots back (Mistral).

    Returns:
        The mask, or None when every query may see every key.
    """
    mask = None
    if causal or sliding_window is not None:
        q_slot = torch.arange(key_len - query_len, key_len)[:, None]  # (T, 1)
        k_slot = torch.arange(key_len)[None, :]  # (1, S)
        mask = k_slot <= q_slot if causal else torch.ones(query_len, key_len, dtype=torch.bool)
        if sliding_window is not None:
            mask = mask & (q_slot - k_slot < sliding_window)
        mask = mask[None, None]  # (1, 1, T, S)
        if key_padding is not None:
            mask = mask.to(key_padding.device)
    if key_padding is not None:
        pad = key_padding.bool()[:, None, None, :]  # (B, 1, 1, S)
        mask = pad if mask is None else mask & pad
    if mask is not None:
        mask = mask | ~mask.any(dim=-1, keepdim=True)
    return mask
