"""The batch driver: prompts prefilled together, then decoded step by step.

`stream_batch` drives the generation core (generate/core.py) over a fixed batch of
prompts of different lengths, as an iterator of per-step token events. Everything
else wraps it: `stream_tokens` (one prompt), `generate` and `generate_batch`
(collect and time), the `LM` API and the CLI. The server's `Engine` drives the same
core with sequences joining and leaving.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch

from zenlm.generate.config import GenerationConfig
from zenlm.generate.core import Sequence, TokenEvent, advance, decode_step, open_rows, prefill
from zenlm.models import DecoderLM, Seq2SeqLM
from zenlm.tokenizer import Tokenizer

__all__ = ["GenerationConfig", "GenerationResult", "TokenEvent", "check_prompts", "generate",
           "generate_batch", "stream_batch", "stream_tokens",
           "to_result"]


@dataclass
class GenerationResult:
    """One generated sequence and how long each phase took."""

    token_ids: list[int]
    prompt_tokens: int
    prefill_s: float
    decode_s: float
    finish_reason: str  # "stop" or "length"
    logprobs: list[float] | None = None
    top_logprobs: list[list[tuple[int, float]]] | None = None
    text: str = ""  # the generated text, when a tokenizer was given

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens per second after the first (the first comes out of prefill)."""
        steps = len(self.token_ids) - 1
        return steps / self.decode_s if steps > 0 and self.decode_s > 0 else 0.0


def check_prompts(model: DecoderLM | Seq2SeqLM, prompts: Seq[Seq[int]]) -> None:
    """ValueError for an empty prompt or one that leaves no room in the context.

    An encoder-decoder's prompts are sources: at most the encoder's context each.
    """
    if not prompts:
        raise ValueError("no prompts given")
    context = model.config.context_length
    for index, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError(f"prompt {index} is empty: give at least one token")
        if isinstance(model, Seq2SeqLM):  # a source: the decoder has its own slots
            if len(prompt) > context:
                raise ValueError(f"source {index} has {len(prompt)} tokens; the encoder reads "
                                 f"at most {context}")
        elif len(prompt) >= context:
            raise ValueError(
                f"prompt {index} has {len(prompt)} tokens; the model's context is {context}, "
                f"so at most {context - 1} leave room to generate"
            )


@torch.inference_mode()
def stream_batch(
    model: DecoderLM,
    prompts: Seq[Seq[int]],
    config: GenerationConfig,
    tokenizer: Tokenizer | None = None,
) -> Iterator[list[TokenEvent]]:
    """Generate for several prompts at once; yield each step's tokens.

    Rows are the prompts, each repeated num_return_sequences times (row r belongs
    to prompt r // num_return_sequences). A row ends on a stop token, on a stop
    string (with a tokenizer), at max_new_tokens, or at the context's end; rows that
    ended leave the batch (and its cache). An encoder-decoder's prompts are its
    sources (see `open_rows`).

    Args:
        model: The decoder.
        prompts: Token ids of each prompt.
        config: What to generate.
        tokenizer: Gives each event its text and applies config.stop.

    Yields:
        Per step, one TokenEvent per row still running.

    Raises:
        ValueError: an invalid config, an empty prompt, or one too long for the context.
    """
    config.validate()
    check_prompts(model, prompts)
    n, context = config.num_return_sequences, model.config.context_length
    rows = [prompt for prompt in prompts for _ in range(n)]
    decoder_prompts, cache = open_rows(model, rows, config.max_new_tokens,
                                       cross_cache=config.use_cross_cache)
    seqs = [Sequence(prompt, config, vocab_size=model.config.vocab_size, index=i,
                     tokenizer=tokenizer, context=context)
            for i, prompt in enumerate(decoder_prompts)]
    logits = prefill(model, [seq.prompt for seq in seqs], cache)
    while True:
        events = advance(logits, seqs)
        yield events
        running = [row for row, seq in enumerate(seqs) if not seq.finished]
        if not running:
            return
        if len(running) < len(seqs):  # finished rows leave the batch
            cache.keep_rows(torch.tensor(running, device=cache.lengths.device))
            seqs = [seqs[row] for row in running]
        last = torch.tensor([seq.tokens[-1] for seq in seqs], device=cache.lengths.device)
        logits = decode_step(model, last, cache)


def stream_tokens(
    model: DecoderLM, prompt_ids: Seq[int], config: GenerationConfig
) -> Iterator[int]:
    """Yield the generated token ids of one prompt, one at a time."""
    for events in stream_batch(model, [prompt_ids], config):
        for event in events:
            yield event.token


def generate_batch(
    model: DecoderLM,
    prompts: Seq[Seq[int]],
    config: GenerationConfig,
    tokenizer: Tokenizer | None = None,
) -> list[GenerationResult]:
    """Run `stream_batch` to the end; one result per row (prompt x num_return_sequences).

    Timing: prefill_s is the time to the first step's tokens, decode_s the rest.
    """
    start = time.perf_counter()
    first_at = None
    per_row: dict[int, list[TokenEvent]] = {}
    for events in stream_batch(model, prompts, config, tokenizer):
        first_at = first_at or time.perf_counter()
        for event in events:
            per_row.setdefault(event.row, []).append(event)
    end = time.perf_counter()
    first_at = first_at or end
    n = config.num_return_sequences
    return [
        to_result(per_row[row], len(prompts[row // n]), first_at - start, end - first_at, config)
        for row in sorted(per_row)
    ]


def to_result(
    events: list[TokenEvent], prompt_tokens: int, prefill_s: float, decode_s: float,
    config: GenerationConfig,
) -> GenerationResult:
    """One sequence's events gathered into a result."""
    return GenerationResult(
        token_ids=[e.token for e in events],
        prompt_tokens=prompt_tokens,
        prefill_s=prefill_s,
        decode_s=decode_s,
        finish_reason=events[-1].finish_reason or "length",
        logprobs=[e.logprob for e in events] if config.logprobs else None,
        top_logprobs=[e.top_logprobs for e in events] if config.top_logprobs else None,
        text="".join(e.text for e in events),
    )


def generate(
    model: DecoderLM, prompt_ids: Seq[int], config: GenerationConfig
) -> GenerationResult:
    """Generate for one prompt (the first sequence if num_return_sequences > 1)."""
    return generate_batch(model, [prompt_ids], config)[0]
