"""Choosing the next token from logits: pure functions over tensors, no model state.

The order of operations is transformers': penalties, then temperature, then top-k,
top-p and min-p masks, then a draw (or argmax for greedy). A draw inverts the CDF at
a uniform number, so each row can bring its own (from its own seeded generator).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    """How to turn logits into a token (validated by GenerationConfig)."""

    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    min_p: float = 0.0  # 0: off
    repetition_penalty: float = 1.0  # 1: off; on prompt and generated tokens
    presence_penalty: float = 0.0  # 0: off; on generated tokens
    frequency_penalty: float = 0.0  # 0: off; on generated tokens

    @property
    def greedy(self) -> bool:
        """True when the argmax is taken."""
        return self.temperature == 0.0


def apply_penalties(
    logits: torch.Tensor,
    seen: torch.Tensor | None,
    counts: torch.Tensor | None,
    params: SamplingParams,
) -> torch.Tensor:
    """Penalise tokens already used.

    Args:
        logits: (B, V) scores.
        seen: (B, V) bool, tokens in the prompt or generated so far (repetition penalty).
        counts: (B, V) times each token was generated (presence/frequency penalties).
        params: The penalties.

    Returns:
        (B, V) penalised scores: repetition divides a positive score by the penalty and
        multiplies a negative one (transformers/CTRL); presence subtracts a constant
        from every generated token, frequency subtracts it times the count (OpenAI).
    """
    if params.repetition_penalty != 1.0 and seen is not None:
        penalised = torch.where(logits > 0, logits / params.repetition_penalty,
                                logits * params.repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    if counts is not None and (params.presence_penalty or params.frequency_penalty):
        counts = counts.to(logits.dtype)
        logits = logits - params.presence_penalty * (counts > 0) - params.frequency_penalty * counts
    return logits


def mask_top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Set all but the k highest scores of each row (B, V) to -inf (ties at the k-th stay)."""
    k = min(k, scores.shape[-1])
    threshold = scores.topk(k, dim=-1).values[..., -1:]  # (B, 1)
    return scores.masked_fill(scores < threshold, float("-inf"))


def mask_top_p(scores: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the most likely tokens whose cumulative probability first reaches p (nucleus)."""
    sorted_scores, order = scores.sort(dim=-1, descending=True)
    probs = sorted_scores.softmax(dim=-1)
    # Drop a token when the tokens before it already reach p; the top token always stays.
    drop_sorted = (probs.cumsum(dim=-1) - probs) >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return scores.masked_fill(drop, float("-inf"))


def mask_min_p(scores: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens less likely than min_p times the most likely one."""
    probs = scores.softmax(dim=-1)
    threshold = min_p * probs.amax(dim=-1, keepdim=True)
    return scores.masked_fill(probs < threshold, float("-inf"))


def warp(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature and the top-k / top-p / min-p masks, in float32: (B, V) -> (B, V)."""
    scores = logits.float() / params.temperature
    if params.top_k > 0:
        scores = mask_top_k(scores, params.top_k)
    if params.top_p < 1.0:
        scores = mask_top_p(scores, params.top_p)
    if params.min_p > 0.0:
        scores = mask_min_p(scores, params.min_p)
    return scores


def choose_tokens(
    logits: torch.Tensor,
    params: SamplingParams,
    uniforms: torch.Tensor | None = None,
    *,
    seen: torch.Tensor | None = None,
    counts: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pick one token per row, by inverting each row's CDF at a given uniform draw.

    A row's token depends only on its own logits and its own draw, never on the other
    rows: a seeded sequence samples the same tokens whatever it is batched with.

    Args:
        logits: (B, V) next-token logits.
        params: Sampling controls shared by the rows.
        uniforms: (B,) draws in [0, 1) (ignored when greedy).
        seen: (B, V) bool, tokens already in each sequence (repetition penalty).
        counts: (B, V) generated-token counts (presence / frequency penalties).

    Returns:
        (B,) token ids.
    """
    logits = apply_penalties(logits, seen, counts, params)
    if params.greedy:
        return logits.argmax(dim=-1)
    cdf = torch.softmax(warp(logits, params), dim=-1).cumsum(-1)  # (B, V)
    # Scale by the total (float32 sums fall a little short of 1): the draw then always
    # lands on a token of non-zero probability.
    u = uniforms.to(cdf.device, cdf.dtype) * cdf[:, -1]  # (B,)
    tokens = torch.searchsorted(cdf, u[:, None], right=True)[:, 0]
    return tokens.clamp_(max=logits.shape[-1] - 1)


def sample_next(
    logits: torch.Tensor,
    params: SamplingParams | None = None,
    *,
    seen: torch.Tensor | None = None,
    counts: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token per row with one generator for the batch (see `choose_tokens`).

    Args:
        logits: (B, V) next-token logits.
        params: Sampling controls (default: greedy).
        seen: (B, V) bool, tokens already in each sequence (repetition penalty).
        counts: (B, V) generated-token counts (presence / frequency penalties).
        generator: Source of randomness, for reproducible sampling.

    Returns:
        (B,) token ids.
    """
    params = params or SamplingParams()
    uniforms = None if params.greedy else torch.rand(logits.shape[0], generator=generator)
    return choose_tokens(logits, params, uniforms, seen=seen, counts=counts)


def token_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, top: int = 0
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Log-probabilities under the model's own distribution (before sampling controls).

    Args:
        logits: (B, V).
        tokens: (B,) chosen tokens.
        top: How many most likely alternatives to return as well.

    Returns:
        chosen (B,), and if top > 0: top values (B, top) and top ids (B, top).
    """
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    chosen = logprobs.gather(-1, tokens[:, None])[:, 0]
    if top <= 0:
        return chosen, None, None
    values, ids = logprobs.topk(min(top, logprobs.shape[-1]), dim=-1)
    return chosen, values, ids
