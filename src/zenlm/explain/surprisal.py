"""Token-by-token log-probability and surprisal of a text under a causal LM.

Token t's log-probability is log p(x_t | x_<t) from the logits at position t - 1; its
surprisal is -log2 of that probability, in bits. The first token has no prefix to be
predicted from, so it has neither.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class TokenScore:
    """One token's score (logprob and bits are None for the first token)."""

    position: int
    token: str
    logprob: float | None  # natural log
    bits: float | None  # surprisal, -log2 p
    rank: int | None  # 1 = the model's top choice
    top: str | None  # the model's top choice at this position


def token_scores(logits: torch.Tensor, ids: list[int], tokens: list[str],
                 name: Callable[[int], str]) -> list[TokenScore]:
    """Scores of every token of one text.

    Args:
        logits: Next-token logits (T, V) of the text.
        ids: The T token ids.
        tokens: Their display strings.
        name: Display string of a vocabulary id (for the model's top choice).

    Returns:
        T TokenScores, in order.
    """
    logprobs = torch.log_softmax(logits.double(), dim=-1)  # (T, V)
    scores = [TokenScore(0, tokens[0], None, None, None, None)]
    for t in range(1, len(ids)):
        row = logprobs[t - 1]  # (V,) the prediction for position t
        value = row[ids[t]].item()
        rank = int((row > value).sum().item()) + 1
        scores.append(TokenScore(t, tokens[t], value, -value / math.log(2), rank,
                                 name(int(row.argmax()))))
    return scores


def summary(scores: list[TokenScore]) -> dict[str, float]:
    """Mean surprisal (bits per token) and perplexity over the scored tokens."""
    nats = [-s.logprob for s in scores if s.logprob is not None]
    if not nats:
        return {"scored_tokens": 0}
    mean = sum(nats) / len(nats)
    return {"scored_tokens": len(nats), "mean_bits": mean / math.log(2),
            "perplexity": math.exp(mean)}
