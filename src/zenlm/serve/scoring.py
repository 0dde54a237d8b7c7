"""The log-probabilities of prompt tokens, for `/v1/completions` with `echo` and `logprobs`.

OpenAI's legacy completions API returns, with `echo: true`, each prompt token's
log-probability given the tokens before it (the first token has none) and its most
likely alternatives. lm-evaluation-harness's `local-completions` backend scores
multiple-choice answers this way.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch

from zenlm.generate.sampling import token_logprobs
from zenlm.models import DecoderLM


@dataclass
class ScoredToken:
    """One prompt token: its log-probability given the ones before, and the top alternatives."""

    token: int
    logprob: float | None
    top: list[tuple[int, float]] | None


@torch.inference_mode()
def score_prompts(model: DecoderLM, prompts: Seq[Seq[int]], top: int) -> list[list[ScoredToken]]:
    """Each prompt token's log-probability and its `top` most likely alternatives.

    Args:
        model: A decoder.
        prompts: P prompts' token ids (each at most the model's context).
        top: Alternatives per token (0: none).

    Returns:
        Per prompt, one ScoredToken per token; the first has no logprob and no top.
    """
    return [_score_one(model, list(prompt), top) for prompt in prompts]


def _score_one(model: DecoderLM, prompt: list[int], top: int) -> list[ScoredToken]:
    ids = torch.tensor([prompt])
    logits = model(ids)[0, :-1].float()  # (T-1, V): position t predicts token t+1
    chosen, values, top_ids = token_logprobs(logits, ids[0, 1:], top)
    out = [ScoredToken(prompt[0], None, None)]
    for t in range(len(prompt) - 1):
        alternatives = None
        if top:
            alternatives = list(zip(top_ids[t].tolist(), values[t].tolist(), strict=True))
        out.append(ScoredToken(prompt[t + 1], float(chosen[t]), alternatives))
    return out
