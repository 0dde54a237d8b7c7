"""Choosing the next token from logits: pure functions, no model state."""

from __future__ import annotations

import torch


def sample_next(
    logits: torch.Tensor,
    *,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token per row.

    Args:
        logits: (B, V) next-token logits.
        temperature: 0 for greedy (argmax); otherwise logits are divided by it.
        top_k: Keep only the k most likely tokens (0 keeps all).
        top_p: Keep the smallest set of tokens whose probability reaches top_p.
        generator: Source of randomness, for reproducible sampling.

    Returns:
        (B,) token ids.
    """
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    scores = logits.float() / temperature
    if top_k > 0:
        scores = mask_top_k(scores, top_k)
    if top_p < 1.0:
        scores = mask_top_p(scores, top_p)
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def mask_top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Set all but the k highest scores of each row (B, V) to -inf."""
    k = min(k, scores.shape[-1])
    threshold = scores.topk(k, dim=-1).values[..., -1:]  # (B, 1)
    return scores.masked_fill(scores < threshold, float("-inf"))


def mask_top_p(scores: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the most likely tokens whose cumulative probability first reaches p (nucleus)."""
    sorted_scores, order = scores.sort(dim=-1, descending=True)
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    # Drop a token when the tokens before it already reach p; the top token always stays.
    drop_sorted = (cumulative - sorted_scores.softmax(dim=-1)) >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return scores.masked_fill(drop, float("-inf"))
