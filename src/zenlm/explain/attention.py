"""Attention maps of one text: per layer and head, averaged over heads, and rolled out.

Rollout is Abnar & Zuidema (2020), "Quantifying Attention Flow in Transformers": per
layer, average the heads, add the identity (the residual connection) and renormalise
the rows; then multiply the layers' matrices, the latest on the left. Row t of the
result says how much of token t's final representation traces back to each input token
(under the assumption that attention is the only mixing, which the MLPs break).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from zenlm.nn.attention_probs import record_attention


@dataclass
class AttentionMaps:
    """Every self-attention layer's probabilities for one text.

    Attributes:
        maps: (L, H, n, n) float32, rows summing to 1 (query heads, after GQA expansion).
        bins: n (start, end) token ranges, one per row/column: (t, t + 1) when nothing was
            pooled; wider when the text was longer than the display limit.
        tokens: The T tokens' display strings.
    """

    maps: torch.Tensor
    bins: list[tuple[int, int]]
    tokens: list[str]

    @property
    def pooled(self) -> bool:
        """Whether rows and columns stand for groups of tokens."""
        return len(self.bins) < len(self.tokens)

    def labels(self) -> list[str]:
        """One label per row/column: the token, or "first…last" of a pooled bin."""
        return [self.tokens[a] if b - a == 1 else f"{self.tokens[a]}…{self.tokens[b - 1]}"
                for a, b in self.bins]

    def head_average(self) -> torch.Tensor:
        """(L, n, n): each layer's heads averaged."""
        return self.maps.mean(dim=1)

    def rollout(self) -> torch.Tensor:
        """(n, n): attention rollout over all layers (see the module docstring)."""
        return rollout(self.maps)


def rollout(maps: torch.Tensor) -> torch.Tensor:
    """Abnar & Zuidema's attention rollout.

    Args:
        maps: (L, H, T, T) attention probabilities, rows summing to 1.

    Returns:
        (T, T) float64: A_L ... A_1 with A_l = rownorm(mean_h(maps[l]) + I).
    """
    maps = maps.double()
    eye = torch.eye(maps.shape[-1], dtype=torch.float64)
    result = eye
    for layer in maps:
        mixed = layer.mean(dim=0) + eye  # (T, T): heads averaged, residual added
        result = (mixed / mixed.sum(dim=-1, keepdim=True)) @ result
    return result


def pooling_bins(length: int, limit: int) -> list[tuple[int, int]]:
    """At most `limit` consecutive (start, end) token ranges covering 0..length."""
    if length <= limit:
        return [(t, t + 1) for t in range(length)]
    edges = [round(i * length / limit) for i in range(limit + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def pool_map(probs: torch.Tensor, bins: list[tuple[int, int]]) -> torch.Tensor:
    """Pool (..., T, T) attention into (..., n, n) bins; rows still sum to 1.

    A bin's row is the mean of its queries' rows; a bin's column sums its keys'
    probabilities (the attention the bin receives as a whole).
    """
    T = probs.shape[-1]
    if len(bins) == T:
        return probs
    member = torch.zeros(len(bins), T, dtype=probs.dtype)  # (n, T) bin membership
    for index, (start, end) in enumerate(bins):
        member[index, start:end] = 1.0
    mean_rows = member / member.sum(dim=1, keepdim=True)  # (n, T)
    return mean_rows @ probs @ member.T  # (..., n, n)


def attention_maps(model: nn.Module, forward: Callable[[], object], tokens: list[str],
                   limit: int) -> tuple[AttentionMaps, object]:
    """Run `forward()` once with attention recorded; the maps and what forward returned.

    Args:
        model: The network whose self-attentions to record.
        forward: Calls the model on one text (batch 1).
        tokens: The text's T tokens as display strings.
        limit: Largest n shown; longer texts are pooled into `limit` bins.

    Returns:
        (AttentionMaps with maps (L, H, n, n), forward's return value).
    """
    bins = pooling_bins(len(tokens), limit)
    with torch.no_grad(), record_attention(model) as recorded:
        output = forward()
    if not recorded:
        raise ValueError(f"{type(model).__name__} has no self-attention layers to record")
    maps = torch.stack([pool_map(probs[0], bins) for probs in recorded])  # (L, H, n, n)
    return AttentionMaps(maps, bins, tokens), output
