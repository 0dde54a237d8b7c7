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
PLACEHOLDER = 0  # any token id: only the alternatives at its position are read


@dataclass
class ScoredToken:
    """One prompt token: its log-probability given the ones before, and the top alternatives."""

    token: int
    logprob: float | None
    top: list[tuple[int, float]] | None


@dataclass
class ScoredPrompt:
    """A prompt's scored tokens, and the most likely tokens after it when asked for."""

    tokens: list[ScoredToken]
    after: list[tuple[int, float]] | None = None


def score_prompts(
    model: DecoderLM, prompts: Seq[Seq[int]], top: int, after: int = 0,
) -> list[ScoredPrompt]:
    """Each prompt token's log-probability and its `top` most likely alternatives.

    Args:
        model: A decoder.
        prompts: P prompts' token ids (each at most the model's context, less one with
            `after`).
        top: Alternatives per token (0: none).
        after: Also return the `after` most likely tokens after each prompt (its greedy
            next token first): a placeholder token is scored after the prompt, and its
            position's alternatives are those.

    Returns:
        Per prompt: one ScoredToken per token (the first has no logprob and no top),
        and the alternatives after it (None when `after` is 0).
    """
    requests, owners = [], []
    for index, prompt in enumerate(prompts):
        targets = list(prompt[1:]) + ([PLACEHOLDER] if after else [])
        for start in range(0, len(targets), PIECE_TOKENS):
            piece = tuple(targets[start: start + PIECE_TOKENS])
            requests.append(Request(tuple(prompt[: start + 1]), (piece,)))
            owners.append(index)
    out = [ScoredPrompt([ScoredToken(prompt[0], None, None)]) for prompt in prompts]
    batch = max(1, PIECE_TOKENS // max((len(r.continuations[0]) for r in requests), default=1))
    scores = loglikelihoods(model, requests, batch_size=batch, token_logprobs=True,
                            top_logprobs=max(top, after))
    for owner, request, [score] in zip(owners, requests, scores, strict=True):
        tops = score.top_logprobs or [()] * score.n_tokens
        out[owner].tokens += [ScoredToken(token, logprob, list(alternatives[:top]) if top
                                          else None)
                              for token, logprob, alternatives in zip(
                                  request.continuations[0], score.token_logprobs, tops,
                                  strict=True)]
        if after:  # pieces come in order: the last one ends with the placeholder
            out[owner].after = list(tops[-1][:after])
    if after:
        for scored in out:
            scored.tokens.pop()  # the placeholder
    return out
