"""Which tokens each forward pass reads and which it scores: the two perplexity procedures.

Both cut one token stream into windows the model reads in one forward pass each; a
window scores its tokens from `score_from` to its end, each predicted from the tokens
before it in the same window.

- `sliding_windows`: transformers' "Perplexity of fixed-length models"
  (https://huggingface.co/docs/transformers/perplexity). Windows of `context` tokens
  start every `stride` tokens; each scores only the tokens no earlier window scored
  (the labels of the overlap are masked), and the last window ends at the last token.
- `llama_chunks`: llama.cpp's `llama-perplexity` (tools/perplexity/perplexity.cpp,
  `perplexity()`): `n_chunk = n_tokens // n_ctx` chunks side by side, each scoring the
  tokens after its first half (`first = n_ctx / 2`: the logits at positions first ..
  n_ctx - 2, so n_ctx - first - 1 tokens per chunk), with its first token replaced by
  BOS where the vocabulary adds one. It needs at least 2 * n_ctx tokens.

No torch here: the command line imports this module to build its options.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Window:
    """One forward pass over tokens[start:end].

    Attributes:
        start: First token of the window in the stream.
        end: One past its last token.
        score_from: Offset in the window of the first scored token (>= 1: a token is
            predicted from the ones before it).
        bos: Replace the window's first token with BOS (llama.cpp's chunks).
    """

    start: int
    end: int
    score_from: int
    bos: bool = False

    @property
    def length(self) -> int:
        """Tokens the model reads."""
        return self.end - self.start

    @property
    def scored(self) -> int:
        """Tokens whose negative log-likelihood counts."""
        return self.length - self.score_from


def sliding_windows(n_tokens: int, context: int, stride: int) -> list[Window]:
    """The sliding window of transformers' perplexity guide, over `n_tokens` tokens.

    Window k reads tokens [k * stride, min(k * stride + context, n_tokens)) and scores
    those after the previous window's end (the first window: all but its first token,
    which nothing predicts). Every token but the first is scored exactly once.

    Raises:
        ValueError: context < 2, stride outside 1..context, or fewer than 2 tokens.
    """
    if context < 2:
        raise ValueError(f"--context must be at least 2 tokens, got {context}")
    if not 0 < stride <= context:
        raise ValueError(f"--stride must be in 1..--context ({context}), got {stride}: "
                         "windows advance by it and score the tokens no earlier window did")
    if n_tokens < 2:
        raise ValueError(f"the data holds {n_tokens} token(s); perplexity needs at least 2")
    windows, previous_end = [], 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + context, n_tokens)
        fresh = end - previous_end  # labels not scored by an earlier window
        windows.append(Window(begin, end, max(1, end - begin - fresh)))
        previous_end = end
        if end == n_tokens:
            break
    return windows


def llama_chunks(n_tokens: int, n_ctx: int, bos: bool) -> list[Window]:
    """llama.cpp's chunks: n_tokens // n_ctx of them, each scoring its second half.

    Raises:
        ValueError: n_ctx < 4, or fewer than 2 * n_ctx tokens (llama.cpp's own limit).
    """
    if n_ctx < 4:
        raise ValueError(f"--context (n_ctx) must be at least 4 tokens for --procedure llama, "
                         f"got {n_ctx}")
    if n_tokens < 2 * n_ctx:
        raise ValueError(
            f"--procedure llama needs at least 2 * n_ctx = {2 * n_ctx} tokens with --context "
            f"{n_ctx} (as llama-perplexity), and the data tokenizes to only {n_tokens}; "
            f"use a longer text or --context {max(4, n_tokens // 2)} or less")
    first = n_ctx // 2
    return [Window(i * n_ctx, (i + 1) * n_ctx, first + 1, bos)
            for i in range(n_tokens // n_ctx)]


@dataclass
class Tally:
    """Negative log-likelihoods summed per window (float64), and the totals' statistics.

    Attributes:
        nll: Sum of the scored tokens' NLL (nats), per window.
        nll2: Sum of their squares, per window.
        count: Tokens scored, per window.
    """

    nll: list[float] = field(default_factory=list)
    nll2: list[float] = field(default_factory=list)
    count: list[int] = field(default_factory=list)

    def add(self, nll: float, nll2: float, count: int) -> None:
        """One window's sums."""
        self.nll.append(nll)
        self.nll2.append(nll2)
        self.count.append(count)

    @property
    def tokens(self) -> int:
        """Tokens scored in all."""
        return sum(self.count)

    @property
    def mean_nll(self) -> float:
        """Average NLL per scored token (nats)."""
        return math.fsum(self.nll) / self.tokens

    @property
    def perplexity(self) -> float:
        """exp(mean NLL)."""
        return math.exp(self.mean_nll)

    @property
    def error(self) -> float:
        """llama-perplexity's "± error" of the perplexity.

        The standard error of the mean NLL, sqrt((E[nll^2] - E[nll]^2) / (count - 1)),
        times the perplexity (first-order propagation through exp); nan when undefined.
        """
        count = self.tokens
        mean = self.mean_nll
        variance = math.fsum(self.nll2) / count - mean * mean
        if count < 2 or variance <= 0:
            return math.nan
        return math.sqrt(variance / (count - 1)) * math.exp(mean)

    def window_perplexity(self) -> list[float]:
        """exp(mean NLL) of each window alone."""
        return [math.exp(n / c) for n, c in zip(self.nll, self.count, strict=True)]

    def running_perplexity(self) -> list[float]:
        """exp(mean NLL) of windows 1..k, k = 1..n (what llama-perplexity prints as [k])."""
        out, total, count = [], 0.0, 0
        for n, c in zip(self.nll, self.count, strict=True):
            total, count = total + n, count + c
            out.append(math.exp(total / count))
        return out
