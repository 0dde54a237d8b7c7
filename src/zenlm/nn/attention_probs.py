"""Attention probabilities, recorded on demand for explanations.

The kernels that run a model (`zenlm.nn.attention.sdpa`, `zenlm.nn.cpu_attention`) never
form the probability matrix. `record_attention(model)` is an explicit opt-in, in the
manner of the inference transforms: it swaps every self-attention's `kernel` for
`explicit_attention`, which computes softmax(q k^T x scale + mask) itself and keeps it,
and puts the old kernels back on exit. `Attention.forward` and the fast kernels are
untouched; nothing is recorded unless this context manager is active.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from zenlm.nn.attention import Attention


def explicit_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
    is_causal: bool, scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T x scale + mask) v, written out; arguments as `zenlm.nn.attention.sdpa`.

    Grouped-query keys and values are expanded per query head (head h reads KV head
    h // (H / Hkv)), so the probabilities have one row per query head.

    Args:
        q: Queries (B, H, T, D).
        k: Keys (B, Hkv, S, D).
        v: Values (B, Hkv, S, D).
        mask: None, boolean (B|1, 1, T, S) True where a query may attend, or an additive
            float bias (B|1, H|1, T, S).
        is_causal: Query t sees keys 0..t (T == S); only with mask None.
        scale: Factor on the scores.

    Returns:
        (probabilities (B, H, T, S) float32, output (B, H, T, D) in v's dtype).
    """
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)  # (B, H, S, D)
    v = v.repeat_interleave(group, dim=1)  # (B, H, S, D)
    scores = (q.float() @ k.float().transpose(-1, -2)) * scale  # (B, H, T, S)
    if is_causal:
        T, S = scores.shape[-2:]
        future = torch.ones(T, S, dtype=torch.bool, device=q.device).triu(1)  # (T, S)
        scores = scores.masked_fill(future, float("-inf"))
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    elif mask is not None:
        scores = scores + mask.float()
    probs = torch.softmax(scores, dim=-1)  # (B, H, T, S)
    return probs, probs.to(v.dtype) @ v


def self_attentions(model: nn.Module) -> list[tuple[str, Attention]]:
    """(name, module) of every block's self-attention, in the order the blocks run.

    Cross-attention (`cross_attn`, encoder-decoders) is left out: its keys are the
    source, not the same tokens.
    """
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, Attention) and name.split(".")[-1] == "attn"]


@contextmanager
def record_attention(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Record the attention probabilities of every forward pass run inside the block.

    Yields a list that fills, per forward pass, with one (B, H, T, S) float32 tensor per
    self-attention layer in order (detached). The model's own kernels come back on exit.

    Example:
        with record_attention(model) as maps:
            model(ids)
        layer0 = maps[0]  # (B, H, T, T)
    """
    maps: list[torch.Tensor] = []
    layers = self_attentions(model)
    saved = [module.kernel for _, module in layers]

    def recording(q, k, v, mask, is_causal, scale):  # noqa: ANN001, ANN202 - AttentionKernel
        probs, out = explicit_attention(q, k, v, mask, is_causal, scale)
        maps.append(probs.detach())
        return out

    try:
        for _, module in layers:
            module.kernel = recording
        yield maps
    finally:
        for (_, module), kernel in zip(layers, saved, strict=True):
            module.kernel = kernel
