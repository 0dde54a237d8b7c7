"""The log-probabilities of prompt tokens, for `/v1/completions` with `echo` and `logprobs`.

OpenAI's legacy completions API returns, with `echo: true`, each prompt token's
log-probability given the tokens before it (the first token has none) and its most
likely alternatives. lm-evaluation-harness's `local-completions` backend scores
multiple-choice answers this way.

The scores come from the evaluations' log-likelihood core (`zenlm.eval.loglik`): a
prompt is its first token as the context and the rest as the continuation, so the
server and `zenlm evaluate` compute the same numbers the same way.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass

from zenlm.eval.loglik import Request, loglikelihoods
from zenlm.models import DecoderLM

# Tokens scored per piece: a long prompt is cut into pieces, each scored after all the
# tokens before it, so the (tokens, vocabulary) log-probabilities stay bounded.
PIECE_TOKENS = 1024


@dataclass
class ScoredToken:
    """One prompt token: its log-probability given the ones before, and the top alternatives."""

    token: int
    logprob: float | None
    top: list[tuple[int, float]] | None


def score_prompts(model: DecoderLM, prompts: Seq[Seq[int]], top: int) -> list[list[ScoredToken]]:
    """Each prompt token's log-probability and its `top` most likely alternatives.

    Args:
        model: A decoder.
        prompts: P prompts' token ids (each at most the model's context).
        top: Alternatives per token (0: none).

    Returns:
        Per prompt, one ScoredToken per token; the first has no logprob and no top.
    """
    requests, owners = [], []
    for index, prompt in enumerate(prompts):
        for start in range(1, len(prompt), PIECE_TOKENS):
            piece = tuple(prompt[start: start + PIECE_TOKENS])
            requests.append(Request(tuple(prompt[:start]), (piece,)))
            owners.append(index)
    out = [[ScoredToken(prompt[0], None, None)] for prompt in prompts]
    batch = max(1, PIECE_TOKENS // max((len(r.continuations[0]) for r in requests), default=1))
    scores = loglikelihoods(model, requests, batch_size=batch, token_logprobs=True,
                            top_logprobs=top)
    for owner, request, [score] in zip(owners, requests, scores, strict=True):
        tops = score.top_logprobs or [None] * score.n_tokens
        out[owner] += [ScoredToken(token, logprob, list(alternatives) if top else None)
                       for token, logprob, alternatives in zip(
                           request.continuations[0], score.token_logprobs, tops, strict=True)]
    return out
