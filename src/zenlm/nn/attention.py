"""One attention module for every architecture.

Self or cross, causal or bidirectional, multi-head / grouped-query / multi-query,
with optional RoPE and KV cache.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zenlm.nn.fused import stack_linears
from zenlm.nn.kv_cache import KVCache
from zenlm.nn.rope import apply_rope

#: Up to this many new tokens, attention is two small matmuls instead of SDPA: on
#: CPU, SDPA's flash kernel costs ~4x more than the arithmetic for a decode step.
SMALL_QUERY = 16

#: Queries per block in `blocked_causal_attention`. 128 was fastest for 512-token
#: prompts on SmolLM2's shapes (64: 2.7-3.0 ms per layer, 128: 2.1-2.6, 256: 5.6).
QUERY_BLOCK = 128


class Attention(nn.Module):
    """Scaled dot-product attention with its projections.

    The q, k and v projections can be fused into one matmul for inference
    (`fuse_qkv`); the weights are the same numbers either way.

    Args:
        d_model: Width of the queries' input (and of the output).
        n_heads: Query heads.
        n_kv_heads: Key/value heads (divides n_heads; 1 is MQA, n_heads is MHA).
        head_dim: Size of one head.
        qkv_bias: Biases on the q, k, v projections.
        out_bias: Bias on the output projection.
        d_context: Width of the keys' input for cross-attention (default d_model).
        scale: Factor on the scores (default 1/sqrt(head_dim); T5 uses 1).
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
        scale: float | None = None,
    ) -> None:
        super().__init__()
        if n_heads % n_kv_heads:
            raise ValueError(f"n_heads={n_heads} must be a multiple of n_kv_heads={n_kv_heads}")
        d_context = d_context or d_model
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
        self.q = nn.Linear(d_model, n_heads * head_dim, bias=qkv_bias)
        self.k = nn.Linear(d_context, n_kv_heads * head_dim, bias=qkv_bias)
        self.v = nn.Linear(d_context, n_kv_heads * head_dim, bias=qkv_bias)
        self.o = nn.Linear(n_heads * head_dim, d_model, bias=out_bias)
        self.qkv: nn.Linear | None = None

    def fuse_qkv(self) -> None:
        """Replace q, k, v by one Linear over their concatenated rows (self-attention)."""
        self.qkv = stack_linears((self.q, self.k, self.v))
        del self.q, self.k, self.v

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
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Attend from x to itself (or to `context`, or to precomputed `kv`).

        Args:
            x: Queries' input (B, T, d_model).
            context: Keys' input (B, S, d_context) for cross-attention; None for self.
            mask: Boolean (B|1, 1, T, S), True where a query may attend, or a float
                bias (B|1, H|1, T, S) added to the scores (T5's positions, with masked
                keys at the dtype's minimum); None for all.
            is_causal: Let SDPA apply the causal mask itself (only when `mask` is None).
            rope: (cos, sin), each (B, T, 1, head_dim), applied to q and k.
            cache: KV cache to append this step's keys/values to (self-attention only).
            layer: This layer's index into `cache`.
            kv: Cross-attention keys and values (B, Hkv, S, D) each, from `project_kv`
                (computed once per source); replaces `context`.

        Returns:
            (B, T, d_model).
        """
        B, T, _ = x.shape
        if kv is not None:
            q = self.q(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
            k, v = kv
        else:
            q, k, v = self._project(x, context, rope)  # (B, H, T, D), (B, Hkv, S, D) x 2
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, Hkv, S_total, D)
        causal_prompt = is_causal and mask is None and T > 1
        if T <= SMALL_QUERY and not causal_prompt:
            out = self._small_query_attention(q, k, v, mask)
        elif causal_prompt and use_blocked_attention(q, k):
            out = blocked_causal_attention(q, k, v, scale=self.scale)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=is_causal and mask is None,
                enable_gqa=self.n_kv_heads != self.n_heads, scale=self.scale,
            )  # (B, H, T, D)
        return self.o(out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))

    def project_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys and values (B, Hkv, S, D) each of `context` (B, S, d_context)."""
        B, S, _ = context.shape
        k = self.k(context).view(B, S, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v(context).view(B, S, self.n_kv_heads, self.head_dim).transpose(1, 2)
        return k, v

    def _project(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (B, H, T, D), keys and values (B, Hkv, S, D); RoPE applied to q and k."""
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        if self.qkv is not None and context is None:
            heads = self.qkv(x).view(B, T, H + 2 * Hkv, D)
            qk, v = heads[:, :, : H + Hkv], heads[:, :, H + Hkv:]
            if rope is not None:  # one rotation for q and k together
                qk = apply_rope(qk, *rope)
            q, k = qk[:, :, :H], qk[:, :, H:]
        else:
            source = x if context is None else context
            S = source.shape[1]
            q = self.q(x).view(B, T, H, D)
            k = self.k(source).view(B, S, Hkv, D)
            v = self.v(source).view(B, S, Hkv, D)
            if rope is not None:
                q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def _small_query_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """softmax(q k^T x scale + bias) v for a few queries, query heads grouped per KV head."""
        B, H, T, D = q.shape
        Hkv, S, group = k.shape[1], k.shape[2], H // k.shape[1]
        q = q.reshape(B, Hkv, group * T, D)  # heads h = g*group + i share KV head g
        scores = (q @ k.transpose(-1, -2)) * self.scale  # (B, Hkv, group*T, S)
        if mask is not None and mask.dtype == torch.bool:
            scores = scores.view(B, Hkv, group, T, S).masked_fill(
                ~mask[:, :, None], float("-inf")
            ).view(B, Hkv, group * T, S)
        elif mask is not None:  # an additive bias, per head or shared
            bias = mask.expand(mask.shape[0], H, T, S).reshape(-1, Hkv, group * T, S)
            scores = scores + bias
        probs = torch.softmax(scores.float(), dim=-1).to(v.dtype)
        return (probs @ v).view(B, H, T, D)


def use_blocked_attention(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Whether `blocked_causal_attention` beats SDPA for these queries and keys.

    It does for bfloat16 on CPU past one block of queries: there SDPA's flash kernel
    reaches ~35 GMAC/s on a 512-token prompt while oneDNN's bfloat16 batched matmuls
    reach ~350. In float32 the batched matmuls are the slower ones (6-7 ms per layer
    against SDPA's 4.5), and for one block SDPA's single call is cheaper.
    """
    return (q.device.type == "cpu" and q.dtype == torch.bfloat16 and not q.requires_grad
            and q.shape[2] > QUERY_BLOCK and k.shape[2] == q.shape[2])


def blocked_causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block: int = QUERY_BLOCK,
    scale: float | None = None,
) -> torch.Tensor:
    """Causal softmax(q k^T x scale) v, one block of queries at a time.

    Each block of queries multiplies only the keys up to its own last position,
    which skips about half of the work, and only the block's own keys need the
    causal mask. The query heads that share a KV head are stacked into one matmul,
    so grouped-query keys are never copied per head.

    Args:
        q: Queries (B, H, T, D).
        k: Keys (B, Hkv, T, D), Hkv dividing H (the same T: nothing cached before).
        v: Values (B, Hkv, T, D).
        block: Queries per block.
        scale: Factor on the scores (default 1/sqrt(D)).

    Returns:
        (B, H, T, D), a transposed view of a (B, T, H, D) tensor.
    """
    B, H, T, D = q.shape
    Hkv = k.shape[1]
    group = H // Hkv
    q = (q * (1.0 / math.sqrt(D) if scale is None else scale)).view(B, Hkv, group, T, D)
    keys, values = k.reshape(B * Hkv, T, D), v.reshape(B * Hkv, T, D)
    out = q.new_empty(B, T, Hkv, group, D)
    causal = torch.full((block, block), float("-inf"), dtype=q.dtype).triu(1)
    for start in range(0, T, block):
        end = min(start + block, T)
        n = end - start
        rows = q[:, :, :, start:end].reshape(B * Hkv, group * n, D)
        bias = torch.cat([causal.new_zeros(n, start), causal[:n, :n]], dim=1).repeat(group, 1)
        scores = torch.baddbmm(bias, rows, keys[:, :end].transpose(1, 2))  # (B*Hkv, g*n, end)
        block_out = torch.softmax(scores, dim=-1) @ values[:, :end]  # (B*Hkv, g*n, D)
        out[:, start:end] = block_out.view(B, Hkv, group, n, D).permute(0, 3, 1, 2, 4)
    return out.view(B, T, H, D).transpose(1, 2)


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
        sliding_window: Also forbid keys this many slots back or more (Mistral).

    Returns:
        The mask, or None when every query may see every key.
    """
    device = key_padding.device if key_padding is not None else None
    first_query = torch.full((1,), key_len - query_len, device=device)
    return slot_mask(first_query, key_padding, query_len=query_len, key_len=key_len,
                     causal=causal, sliding_window=sliding_window)


def slot_mask(
    first_query: torch.Tensor,
    key_padding: torch.Tensor | None,
    *,
    query_len: int,
    key_len: int,
    causal: bool,
    sliding_window: int | None = None,
) -> torch.Tensor | None:
    """Like `attention_mask`, with each row's first query at its own slot.

    Args:
        first_query: (B,) or (1,) slot of each row's first new token (its cache length).
        key_padding: (B, S) 1 for real tokens, 0 for padding; None if none.
        query_len: T.
        key_len: S.
        causal: Forbid attending to later slots.
        sliding_window: Also forbid keys this many slots back or more.
    """
    if not causal and sliding_window is None and key_padding is None:
        return None
    q_slot = first_query[:, None, None] + torch.arange(query_len, device=first_query.device)[
        :, None
    ]  # (B, T, 1)
    k_slot = torch.arange(key_len, device=first_query.device)[None, None, :]  # (1, 1, S)
    mask = k_slot <= q_slot if causal else torch.ones_like(k_slot <= q_slot)
    if sliding_window is not None:
        mask = mask & (q_slot - k_slot < sliding_window)
    mask = mask[:, None]  # (B, 1, T, S)
    if key_padding is not None:
        mask = mask & key_padding.bool()[:, None, None, :]
    return mask | ~mask.any(dim=-1, keepdim=True)


def with_bias(bias: torch.Tensor, mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """An additive attention mask: `bias` (B|1, H, T, S), with forbidden keys at dtype's minimum.

    The minimum (not -inf) is what T5 adds, and keeps rows finite.

    Args:
        bias: Position bias per head.
        mask: Boolean (B|1, 1, T, S), True where a query may attend; None for all.
        dtype: The scores' dtype.
    """
    bias = bias.to(dtype)
    if mask is None:
        return bias
    return bias.masked_fill(~mask, torch.finfo(dtype).min)
