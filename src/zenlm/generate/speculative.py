"""Speculative decoding: cheap guesses, verified by the model in one forward pass.

Guesses come from a small draft model, or from the text itself (prompt lookup:
the tokens that followed the last n-gram's previous occurrence). The model scores
the last token plus k guesses at once; the guesses it agrees with are kept, plus its
own next token. Greedy output is exactly plain greedy output, in fewer passes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence as Seq

import torch

from zenlm.generate.core import Sequence, TokenEvent, advance, prefill
from zenlm.generate.decode import GenerationConfig, GenerationResult, check_prompts, to_result
from zenlm.models import DecoderLM
from zenlm.nn import KVCache


def lookup_guesses(tokens: Seq[int], k: int, max_ngram: int = 3) -> list[int]:
    """Up to k tokens that followed the latest earlier occurrence of the last n-gram.

    Tries n = max_ngram down to 1; returns [] when no n-gram recurs.
    """
    for n in range(min(max_ngram, len(tokens) - 1), 0, -1):
        tail = list(tokens[-n:])
        for start in range(len(tokens) - n - 1, -1, -1):
            if list(tokens[start:start + n]) == tail:
                return list(tokens[start + n: start + n + k])
    return []


class _Draft:
    """A draft model with its own cache, kept in step with the accepted tokens."""

    def __init__(self, model: DecoderLM, max_len: int) -> None:
        self.model = model
        self.cache: KVCache = model.new_cache(1, max_len)
        self.seen = 0  # tokens of the sequence already in the draft's cache

    def guesses(self, tokens: list[int], k: int) -> list[int]:
        new = torch.tensor([tokens[self.seen:]])
        out: list[int] = []
        for _ in range(k):
            guess = int(self.model.step(new, self.cache)[0, -1].argmax())
            out.append(guess)
            new = torch.tensor([[guess]])
        self.seen = len(tokens) + k - 1
        return out

    def rewind(self, valid: int) -> None:
        self.seen = min(self.seen, valid)
        self.cache.set_lengths([self.seen])


@torch.inference_mode()
def speculative_generate(
    model: DecoderLM,
    prompt_ids: Seq[int],
    config: GenerationConfig,
    *,
    draft: DecoderLM | None = None,
    num_guesses: int = 4,
    max_ngram: int = 3,
) -> tuple[GenerationResult, int]:
    """Greedy generation with guesses from `draft` (or prompt lookup when None).

    Returns:
        The result, identical in tokens to plain greedy decoding, and the number of
        forward passes of `model` it took.

    Raises:
        ValueError: sampling was asked for (only greedy is exact here), or a bad prompt.
    """
    config.validate()
    check_prompts(model, [prompt_ids])
    if config.temperature != 0.0 or config.num_return_sequences != 1:
        raise ValueError("speculative decoding supports greedy decoding only (temperature=0)")
    if draft is not None and draft.config.vocab_size != model.config.vocab_size:
        raise ValueError(
            f"draft vocab_size {draft.config.vocab_size} != model vocab_size "
            f"{model.config.vocab_size}: the draft must share the tokenizer"
        )
    start = time.perf_counter()
    seq = Sequence(prompt_ids, config, vocab_size=model.config.vocab_size,
                   context=model.config.context_length)
    cache = model.new_cache(1, seq.limit + num_guesses + 1)
    helper = _Draft(draft, seq.limit + num_guesses + 1) if draft is not None else None
    events = advance(prefill(model, [seq.prompt], cache), [seq])
    first_at, passes = time.perf_counter(), 1
    while not seq.finished:
        tokens = seq.prompt + seq.tokens
        k = min(num_guesses, seq.limit - len(tokens))
        guesses = helper.guesses(tokens, k) if helper else lookup_guesses(tokens, k, max_ngram)
        fed = torch.tensor([tokens[-1], *guesses])
        logits = model.step(fed[None], cache)[0].float()  # (k + 1, V)
        passes += 1
        events += _accept(logits, seq, guesses)
        # The cache holds the fed tokens; keep those that are now part of the text.
        cache.set_lengths([len(seq.prompt) + len(seq.tokens) - 1])
        if helper:
            helper.rewind(len(seq.prompt) + len(seq.tokens) - 1)
    end = time.perf_counter()
    result = to_result(events, len(seq.prompt), first_at - start, end - first_at, config)
    return result, passes


def _accept(logits: torch.Tensor, seq: Sequence, guesses: list[int]) -> list[TokenEvent]:
    """Accept the model's own token at each fed position while it agrees with the guesses.

    Args:
        logits: (k + 1, V) the model's logits after each fed token.
        seq: The sequence.
        guesses: The k guesses; the first disagreement is the model's token, the last kept.
    """
    events = []
    for position in range(len(guesses) + 1):
        events += advance(logits[position: position + 1], [seq])
        if seq.finished or position == len(guesses) or seq.tokens[-1] != guesses[position]:
            break
    return events
