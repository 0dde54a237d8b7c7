"""One attention module for every architecture.

Self or cross, causal or bidirectional, multi-head / grouped-query / multi-query,
with optional RoPE and KV cache. The attention itself is one call to `self.kernel`:
plain SDPA by default, right for training and on every device; inference transforms
install faster kernels (`zenlm.nn.cpu_attention`) without touching this file.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from zenlm.nn.fused import stack_linears
from zenlm.nn.kv_cache import KVCache
from zenlm.nn.rope import apply_rope

#: kernel(q, k, v, mask, is_causal, scale) -> out: q (B, H, T, D), k and v (B, Hkv, S, D),
#: mask None / boolean (B|1, 1, T, S) / additive float (B|1, H|1, T, S), out (B, H, T, D).
AttentionKernel = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, bool, float], torch.Tensor
]


def sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
    is_causal: bool, scale: float,
) -> torch.Tensor:
    """softmax(q k^T x scale + mask) v by PyTorch's SDPA; the default `Attention.kernel`.

    Args:
        q: Queries (B, H, T, D).
        k: Keys (B, Hkv, S, D), Hkv dividing H (query head h reads KV head h // (H/Hkv)).
        v: Values (B, Hkv, S, D).
        mask: None; boolean (B|1, 1, T, S), True where a query may attend; or a float
            bias (B|1, H|1, T, S) added to the scores.
        is_causal: Query t sees keys 0..t (top-left aligned: T == S); only with mask None.
        scale: Factor on the scores.

    Returns:
        (B, H, T, D).
    """
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale,
        enable_gqa=k.shape[1] != q.shape[1],
    )


class Attention(nn.Module):
    """Scaled dot-product attention with its projections.

    The q, k and v projections can be fused into one matmul for inference
    (`fuse_qkv`); the weights are the same numbers either way. `kernel` computes the
    attention from the projected heads (see `AttentionKernel`); inference transforms
    replace it.

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
        self.kernel: AttentionKernel = sdpa

    def fuse_qkv(self) -> None:
        """Replace q, k, v by one Linear over their concatenated rows (self-attention)."""
        if self.qkv is not None:
            return
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
                keys at the dtype's minimum); None for all (`zenlm.nn.masks.build_mask`).
            is_causal: Query t sees keys 0..t, T == S (only when `mask` is None).
            rope: (cos, sin), each (B, T, 1, head_dim), applied to q and k.
            cache: KV cache to append this step's keys/values to (self-attention only).
            layer: This layer's index into `cache`.
            kv: Cross-attention keys and values (B, Hkv, S, D) each, from `project_kv`
                (computed once per source); replaces `context`.

        Returns:
            (B, T, d_model).
        """
        B, T, _ = x.shape
        if kv is None:
            q, k, v = self._project(x, context, rope)  # (B, H, T, D), (B, Hkv, S, D) x 2
        else:
            q = self.q(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
            k, v = kv  # (B, Hkv, S, D) each
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, Hkv, S, D): earlier slots, then these
        out = self.kernel(q, k, v, mask, is_causal, self.scale)  # (B, H, T, D)
        out = out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, H*D)
        return self.o(out)  # (B, T, d_model)

    def extra_repr(self) -> str:
        """Shown by print(model): the kernel, as inference transforms change it."""
        return f"kernel={getattr(self.kernel, '__name__', self.kernel)}"

    def project_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys and values (B, Hkv, S, D) each of `context` (B, S, d_context)."""
        B, S, _ = context.shape
        Hkv, D = self.n_kv_heads, self.head_dim
        k = self.k(context).view(B, S, Hkv, D).transpose(1, 2)  # (B, Hkv, S, D)
        v = self.v(context).view(B, S, Hkv, D).transpose(1, 2)  # (B, Hkv, S, D)
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
            heads = self.qkv(x).view(B, T, H + 2 * Hkv, D)  # (B, T, H + 2 Hkv, D)
            qk, v = heads[:, :, : H + Hkv], heads[:, :, H + Hkv:]  # (B,T,H+Hkv,D), (B,T,Hkv,D)
            if rope is not None:  # one rotation for q and k together
                qk = apply_rope(qk, *rope)
            q, k = qk[:, :, :H], qk[:, :, H:]  # (B, T, H, D), (B, T, Hkv, D)
        else:
            source = x if context is None else context
            S = source.shape[1]
            q = self.q(x).view(B, T, H, D)  # (B, T, H, D)
            k = self.k(source).view(B, S, Hkv, D)  # (B, S, Hkv, D)
            v = self.v(source).view(B, S, Hkv, D)  # (B, S, Hkv, D)
            if rope is not None:
                q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # heads before positions
