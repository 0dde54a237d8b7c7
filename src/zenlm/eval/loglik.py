r"""Log-likelihood of continuations given a context: the one scoring core of zenlm's evaluations.

This is lm-evaluation-harness's `loglikelihood` request type (`lm_eval/api/model.py` and
`lm_eval/models/huggingface.py`), done with the KV cache: each distinct context is run
through the model once (`prefill`), its cache rows are repeated once per continuation
(`KVCache.keep_rows`), and every continuation is scored from the cached state in one
batched forward pass. Multiple choice, causal sentence scoring (bias) and the server's
prompt log-probabilities (`echo`) all call `loglikelihoods`.

Token boundaries follow lm-eval exactly (see `encode_pair` and `encode_request`):

- trailing whitespace of the context moves to the start of the continuation;
- context and context + continuation are encoded, and the continuation's tokens are
  the whole's tokens after the context's (so a merge across the boundary is scored
  as lm-eval scores it);
- an empty context means "score the continuation after the model's start token":
  the context is `[prefix_token_id]` (BOS, else EOS), and a continuation that already
  starts with that token has it moved into the context;
- a context + continuation longer than the model's context plus one loses tokens of
  the context from the left (lm-eval's truncation; the continuation is never cut).

Example:
    >>> lm = zenlm.load("SmolLM2-135M-Instruct.gguf", quantize="none")
    >>> request = encode_request(lm.tokenizer, "Question: 2+2?\nAnswer:", [" 4", " 5"])
    >>> four, five = loglikelihoods(lm.model, [request])[0]
    >>> four.logprob > five.logprob, four.n_tokens, four.is_greedy
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zenlm.generate.core import prefill
from zenlm.models import DecoderLM
from zenlm.tokenizer import Tokenizer


@dataclass(frozen=True)
class Request:
    """One context and the continuations to score after it.

    Attributes:
        context: Token ids of the context (at least one token: see `encode_request`).
        continuations: Token ids of each continuation (at least one token each).
    """

    context: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Score:
    """One continuation's log-likelihood given its context.

    Attributes:
        logprob: Sum of its tokens' natural-log probabilities.
        n_tokens: How many tokens were scored.
        is_greedy: Whether greedy decoding from the context produces exactly these
            tokens (every token is its position's argmax; lm-eval's `is_greedy`).
        token_logprobs: Each token's log-probability, when asked for (else None).
        top_logprobs: At each token's position, the `top_logprobs` most likely tokens as
            (token id, log-probability), most likely first, when asked for (else None):
            what OpenAI's legacy completions return for an echoed prompt.
    """

    logprob: float
    n_tokens: int
    is_greedy: bool
    token_logprobs: tuple[float, ...] | None = None
    top_logprobs: tuple[tuple[tuple[int, float], ...], ...] | None = None


def prefix_token_id(tokenizer: Tokenizer) -> int:
    """The token an empty context stands for: BOS, else EOS (lm-eval's `prefix_token_id`)."""
    token = tokenizer.bos_token_id
    if token is None:
        token = tokenizer.eos_token_id
    if token is None:
        raise ValueError("the tokenizer has neither a BOS nor an EOS token: an empty context "
                         "cannot be scored; give a non-empty context")
    return token


def encode_pair(tokenizer: Tokenizer, context: str, continuation: str) -> tuple[
        list[int], list[int]]:
    """Token ids of a non-empty context and of a continuation after it, as lm-eval splits them.

    Trailing whitespace of the context moves to the continuation; the continuation's
    ids are those of `context + continuation` past the context's own ids.
    """
    if not context:
        raise ValueError("encode_pair needs a non-empty context (use encode_request)")
    stripped = context.rstrip()
    continuation = context[len(stripped):] + continuation
    whole = _encode(tokenizer, stripped + continuation)
    context_ids = _encode(tokenizer, stripped)
    return context_ids, whole[len(context_ids):]


def encode_request(tokenizer: Tokenizer, context: str, continuations: Sequence[str]) -> Request:
    """A `Request` from text, with lm-eval's token boundaries (see the module docstring).

    Raises:
        ValueError: a continuation has no tokens of its own (it is empty, or it is the
            start token alone after an empty context), naming it.
    """
    if context:  # encode_pair, with the context encoded once
        stripped = context.rstrip()
        context_ids = _encode(tokenizer, stripped)
        conts = [_encode(tokenizer, stripped + context[len(stripped):] + text)[len(context_ids):]
                 for text in continuations]
    else:
        start = prefix_token_id(tokenizer)
        context_ids = [start]
        conts = [tokenizer.encode(text, add_special_tokens=False) for text in continuations]
        conts = [ids[1:] if ids[:1] == [start] else ids for ids in conts]
    for text, ids in zip(continuations, conts, strict=True):
        if not ids:
            raise ValueError(f"continuation {text!r} has no tokens to score after context "
                             f"{context[-60:]!r}")
    return Request(tuple(context_ids), tuple(tuple(ids) for ids in conts))


def _encode(tokenizer: Tokenizer, text: str) -> list[int]:
    """lm-eval's `tok_encode`: the tokenizer's own special tokens, unless text starts with one."""
    start = tokenizer.bos_token or tokenizer.eos_token
    return tokenizer.encode(text, add_special_tokens=not (start and text.startswith(start)))


@dataclass(frozen=True)
class _Wanted:
    token_logprobs: bool  # each token's log-probability
    top: int  # how many alternatives per position


@dataclass(frozen=True)
class _Row:
    request: int  # index of its Request
    choice: int  # index of its continuation in that Request
    tokens: tuple[int, ...]


@torch.inference_mode()
def loglikelihoods(
    model: DecoderLM, requests: Sequence[Request], *, batch_size: int = 16,
    token_logprobs: bool = False, top_logprobs: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[list[Score]]:
    """Each continuation's summed log-probability given its request's context.

    Contexts are prefilled once each (identical contexts once in all); a batch holds up
    to `batch_size` continuations (at least one whole context's), longest first, so
    that a batch's rows have similar lengths.

    Args:
        model: A causal decoder (`zenlm.load(...).model`).
        requests: Contexts and their continuations, as token ids.
        batch_size: Continuations scored per forward pass (lm-eval's `batch_size`).
        token_logprobs: Also return each token's log-probability.
        top_logprobs: Also return this many most likely tokens at each position.
        progress: Called with the number of requests finished after each batch.

    Returns:
        scores[i][j]: the Score of requests[i].continuations[j].

    Raises:
        ValueError: an empty context or continuation, a continuation longer than the
            model's context, batch_size < 1 or top_logprobs < 0.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if top_logprobs < 0:
        raise ValueError(f"top_logprobs must be >= 0, got {top_logprobs}")
    wanted = _Wanted(token_logprobs, top_logprobs)
    groups = _group_by_context(requests, model.config.context_length)
    results: list[list[Score | None]] = [[None] * len(r.continuations) for r in requests]
    left = [len(r.continuations) for r in requests]
    for batch in _batches(groups, batch_size):
        scores = _score_batch(model, batch, wanted)
        done = 0
        for (_, rows), row_scores in zip(batch, scores, strict=True):
            for row, score in zip(rows, row_scores, strict=True):
                results[row.request][row.choice] = score
                left[row.request] -= 1
                done += left[row.request] == 0
        if progress is not None:
            progress(done)
    if progress is not None:  # requests without continuations finish at once
        progress(sum(not r.continuations for r in requests))
    return results  # type: ignore[return-value]


def _group_by_context(
    requests: Sequence[Request], max_length: int
) -> list[tuple[tuple[int, ...], list[_Row]]]:
    """Continuations grouped by the context they are scored after, longest group first.

    lm-eval keeps the last max_length + 1 tokens of context + continuation, so a long
    pair loses context tokens from the left; pairs whose kept contexts are equal share
    one prefill.
    """
    groups: dict[tuple[int, ...], list[_Row]] = {}
    for i, request in enumerate(requests):
        if not request.context:
            raise ValueError(f"request {i} has an empty context: score after the start "
                             "token (encode_request does this for an empty text context)")
        for j, cont in enumerate(request.continuations):
            if not cont:
                raise ValueError(f"request {i}, continuation {j} is empty")
            if len(cont) > max_length:
                raise ValueError(f"request {i}, continuation {j} has {len(cont)} tokens; the "
                                 f"model's context holds {max_length}")
            context = tuple(request.context)
            if len(context) + len(cont) > max_length + 1:
                context = (context + tuple(cont))[-(max_length + 1):-len(cont)]
            groups.setdefault(context, []).append(_Row(i, j, tuple(cont)))
    return sorted(groups.items(), key=lambda g: -(len(g[0]) + max(len(r.tokens) for r in g[1])))


def _batches(groups: list, batch_size: int) -> list[list]:
    """Consecutive groups with at most batch_size rows in all (a larger group goes alone)."""
    batches, current, rows = [], [], 0
    for group in groups:
        if current and rows + len(group[1]) > batch_size:
            batches.append(current)
            current, rows = [], 0
        current.append(group)
        rows += len(group[1])
    return batches + [current] if current else batches


def _score_batch(
    model: DecoderLM, batch: list[tuple[tuple[int, ...], list[_Row]]], wanted: _Wanted
) -> list[list[Score]]:
    """Prefill the batch's contexts, repeat each context's cache rows per continuation, score.

    A continuation's first token is scored by the logits after its context (from the
    prefill); its other tokens by one forward pass of every row's tokens but the last
    over the expanded cache (rows right-padded: the causal mask hides the padding).
    """
    contexts = [list(context) for context, _ in batch]
    rows = [row for _, group in batch for row in group]
    owner = torch.tensor([g for g, (_, group) in enumerate(batch) for _ in group])  # (R,)
    longest = max(len(r.tokens) for r in rows)
    cache = model.new_cache(len(contexts), max(len(c) for c in contexts) + longest - 1)
    first = prefill(model, contexts, cache)[owner]  # (R, V) logits of each first token
    steps = [first]
    targets = [torch.tensor([r.tokens[0] for r in rows])]
    if longest > 1:
        cache.keep_rows(owner)
        ids = torch.zeros(len(rows), longest - 1, dtype=torch.long)  # (R, T), right-padded
        for index, row in enumerate(rows):
            ids[index, : len(row.tokens) - 1] = torch.tensor(row.tokens[:-1])
        real = torch.arange(longest - 1)[None] < torch.tensor(
            [len(r.tokens) - 1 for r in rows])[:, None]  # (R, T)
        hidden = model.hidden_states(ids, cache=cache)  # (R, T, d)
        steps.append(model.lm_head(hidden[real]).float())  # (N, V), row-major
        targets.append(torch.tensor([t for r in rows for t in r.tokens[1:]]))
    return _split_scores(rows, batch, torch.cat(steps), torch.cat(targets), wanted)


def _split_scores(
    rows: list[_Row], batch: list, logits: torch.Tensor, targets: torch.Tensor,
    wanted: _Wanted,
) -> list[list[Score]]:
    """Per-row Scores from logits (R + N, V): R first tokens, then the rest row by row."""
    logp = F.log_softmax(logits, dim=-1)  # (R + N, V)
    chosen = logp.gather(1, targets[:, None])[:, 0].tolist()
    greedy = (logits.argmax(dim=-1) == targets).tolist()
    top = None
    if wanted.top:
        values, ids = logp.topk(min(wanted.top, logp.shape[-1]), dim=-1)  # (R + N, k)
        top = [tuple(zip(i, v, strict=True)) for i, v in zip(ids.tolist(), values.tolist(),
                                                             strict=True)]
    R = len(rows)
    out, cursor, rest = [], 0, R
    for _, group in batch:
        scores = []
        for row in group:
            n = len(row.tokens)
            positions = [cursor, *range(rest, rest + n - 1)]
            values = [chosen[p] for p in positions]
            scores.append(Score(sum(values), n, all(greedy[p] for p in positions),
                                tuple(values) if wanted.token_logprobs else None,
                                None if top is None else tuple(top[p] for p in positions)))
            cursor, rest = cursor + 1, rest + n - 1
        out.append(scores)
    return out
