"""One generation loop: prefill prompts into a KV cache, then decode step by step.

`stream_batch` is the loop, as an iterator of per-step token events for a batch of
prompts of different lengths (no padding in the cache: each row has its own length).
Everything else wraps it: `stream_tokens` (one prompt), `generate` and
`generate_batch` (collect and time), the `LM` API, the CLI and the server.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from zenlm.generate.sampling import SamplingParams, sample_next, token_logprobs
from zenlm.models import DecoderLM

StopCheck = Callable[[int, int], bool]  # (row, token) -> stop this row now?


@dataclass
class GenerationConfig:
    """What to generate and how to choose tokens.

    Attributes:
        max_new_tokens: Upper bound on generated tokens per sequence (>= 1).
        temperature: 0 for greedy; > 0 samples from softmax(logits / temperature).
        top_k: Keep the k most likely tokens before sampling (0: all).
        top_p: Nucleus sampling threshold in (0, 1].
        min_p: Drop tokens less likely than min_p x the top token, in [0, 1).
        repetition_penalty: > 0; 1 is off (transformers' semantics).
        presence_penalty: In [-2, 2]; OpenAI's semantics, on generated tokens.
        frequency_penalty: In [-2, 2]; OpenAI's semantics, on generated tokens.
        seed: Seed for reproducible sampling (None: nondeterministic).
        stop_token_ids: A sequence ends after any of these (kept in its token_ids).
        stop: Stop strings (applied on text by callers that have a tokenizer).
        num_return_sequences: Sequences per prompt (>= 1).
        logprobs: Return the log-probability of each chosen token.
        top_logprobs: Also return this many most likely alternatives per step (0-20).
        num_beams: Beam search width (1: no beam search).
        length_penalty: Beam score = sum of logprobs / length ** length_penalty.
        early_stopping: Beam search ends once num_beams hypotheses are finished.
    """

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop_token_ids: Sequence[int] = field(default_factory=tuple)
    stop: Sequence[str] = field(default_factory=tuple)
    num_return_sequences: int = 1
    logprobs: bool = False
    top_logprobs: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool = False

    def validate(self) -> None:
        """Raise ValueError naming the first parameter outside its valid range."""
        _check_int(self.max_new_tokens, "max_new_tokens", 1)
        _check_float(self.temperature, "temperature", 0.0, math.inf, "a finite number >= 0")
        _check_int(self.top_k, "top_k", 0, note=" (0 disables it)")
        if not (isinstance(self.top_p, (int, float)) and 0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        _check_float(self.min_p, "min_p", 0.0, 1.0, "in [0, 1)", high_open=True)
        _check_float(self.repetition_penalty, "repetition_penalty", 0.0, math.inf, "> 0",
                     low_open=True)
        _check_float(self.presence_penalty, "presence_penalty", -2.0, 2.0, "in [-2, 2]")
        _check_float(self.frequency_penalty, "frequency_penalty", -2.0, 2.0, "in [-2, 2]")
        _check_int(self.num_return_sequences, "num_return_sequences", 1)
        _check_int(self.top_logprobs, "top_logprobs", 0, 20)
        _check_int(self.num_beams, "num_beams", 1)
        _check_float(self.length_penalty, "length_penalty", -math.inf, math.inf, "finite")
        if self.seed is not None and not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer or None, got {self.seed!r}")

    def sampling(self) -> SamplingParams:
        """The token-choice controls of this config."""
        return SamplingParams(
            temperature=float(self.temperature), top_k=self.top_k, top_p=float(self.top_p),
            min_p=float(self.min_p), repetition_penalty=float(self.repetition_penalty),
            presence_penalty=float(self.presence_penalty),
            frequency_penalty=float(self.frequency_penalty),
        )


def _check_int(value: object, name: str, low: int, high: int | None = None, note: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
        high is not None and value > high
    ):
        valid = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an integer {valid}{note}, got {value!r}")


def _check_float(
    value: object, name: str, low: float, high: float, valid: str,
    *, low_open: bool = False, high_open: bool = False,
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high
        )
    if not ok:
        raise ValueError(f"{name} must be {valid}, got {value!r}")


@dataclass
class TokenEvent:
    """One token of one sequence, as the loop produces it."""

    row: int
    token: int
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None
    finish_reason: str | None = None  # "stop" or "length" on a sequence's last token


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

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens per second after the first (the first comes out of prefill)."""
        steps = len(self.token_ids) - 1
        return steps / self.decode_s if steps > 0 and self.decode_s > 0 else 0.0


def check_prompts(model: DecoderLM, prompts: Sequence[Sequence[int]]) -> None:
    """ValueError for an empty prompt or one that leaves no room in the context."""
    if not prompts:
        raise ValueError("no prompts given")
    context = model.config.max_seq_len
    for index, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError(f"prompt {index} is empty: give at least one token")
        if len(prompt) >= context:
            raise ValueError(
                f"prompt {index} has {len(prompt)} tokens; the model's context is {context}, "
                f"so at most {context - 1} leave room to generate"
            )


@torch.inference_mode()
def stream_batch(
    model: DecoderLM,
    prompts: Sequence[Sequence[int]],
    config: GenerationConfig,
    stop_check: StopCheck | None = None,
) -> Iterator[list[TokenEvent]]:
    """Generate for several prompts at once; yield each step's tokens.

    Rows are the prompts, each repeated num_return_sequences times (row r belongs
    to prompt r // num_return_sequences). A row ends on a stop token, when
    `stop_check(row, token)` says so, at max_new_tokens, or at the context's end.

    Yields:
        Per step, one TokenEvent per row still running.

    Raises:
        ValueError: an invalid config, an empty prompt, or one too long for the context.
    """
    config.validate()
    check_prompts(model, prompts)
    rows = [list(p) for p in prompts for _ in range(config.num_return_sequences)]
    state = _LoopState(model, rows, config)
    logits = state.prefill()
    while True:
        events = state.choose(logits, stop_check)
        yield events
        if state.done():
            return
        logits = state.step()


class _LoopState:
    """Cache, per-row bookkeeping and the penalties' token statistics of one run."""

    def __init__(self, model: DecoderLM, rows: list[list[int]], config: GenerationConfig) -> None:
        self.model, self.rows, self.config = model, rows, config
        self.params = config.sampling()
        B, V = len(rows), model.config.vocab_size
        lengths = [len(r) for r in rows]
        self.limit = [min(model.config.max_seq_len, n + config.max_new_tokens) for n in lengths]
        self.cache = model.new_cache(B, max(self.limit))
        self.device = self.cache.lengths.device
        self.generated = [0] * B
        self.running = [True] * B
        self.stop_ids = set(config.stop_token_ids)
        self.generator = (
            torch.Generator(device=self.device).manual_seed(config.seed)
            if config.seed is not None else None
        )
        self.seen = self.counts = None
        if self.params.repetition_penalty != 1.0:
            self.seen = torch.zeros(B, V, dtype=torch.bool, device=self.device)
            for row, prompt in enumerate(rows):
                self.seen[row, torch.tensor(prompt, device=self.device)] = True
        if self.params.presence_penalty or self.params.frequency_penalty:
            self.counts = torch.zeros(B, V, dtype=torch.int32, device=self.device)
        self.last = torch.zeros(B, dtype=torch.long, device=self.device)

    def prefill(self) -> torch.Tensor:
        """Run all prompts (right-padded) through the model; logits (B, V) of their ends."""
        lengths = torch.tensor([len(r) for r in self.rows], device=self.device)
        ids = torch.zeros(len(self.rows), int(lengths.max()), dtype=torch.long, device=self.device)
        for row, prompt in enumerate(self.rows):
            ids[row, : len(prompt)] = torch.tensor(prompt, device=self.device)
        # Right padding is invisible to real tokens under the causal mask; the cache then
        # forgets the padded slots by taking each row's true length.
        hidden = self.model.hidden_states(ids, cache=self.cache)  # (B, T, d)
        self.cache.set_lengths(lengths)
        last = hidden[torch.arange(len(self.rows), device=self.device), lengths - 1]
        return self.model.lm_head(last).float()  # (B, V)

    def step(self) -> torch.Tensor:
        """Feed each row's last token; logits (B, V) of the next."""
        return self.model.step(self.last[:, None], self.cache)[:, 0].float()

    def choose(self, logits: torch.Tensor, stop_check: StopCheck | None) -> list[TokenEvent]:
        tokens = sample_next(logits, self.params, seen=self.seen, counts=self.counts,
                             generator=self.generator)  # (B,)
        self._record(tokens)
        chosen = top_values = top_ids = None
        if self.config.logprobs or self.config.top_logprobs:
            chosen, top_values, top_ids = token_logprobs(logits, tokens, self.config.top_logprobs)
        events = []
        for row, token in enumerate(tokens.tolist()):
            if not self.running[row]:
                continue
            self.generated[row] += 1
            event = TokenEvent(row, token)
            if chosen is not None:
                event.logprob = float(chosen[row])
            if top_ids is not None:
                event.top_logprobs = list(
                    zip(top_ids[row].tolist(), top_values[row].tolist(), strict=True)
                )
            event.finish_reason = self._finish_reason(row, token, stop_check)
            self.running[row] = event.finish_reason is None
            events.append(event)
        return events

    def _record(self, tokens: torch.Tensor) -> None:
        self.last = tokens
        rows = torch.arange(len(tokens), device=self.device)
        if self.seen is not None:
            self.seen[rows, tokens] = True
        if self.counts is not None:
            self.counts[rows, tokens] += 1

    def _finish_reason(self, row: int, token: int, stop_check: StopCheck | None) -> str | None:
        if token in self.stop_ids or (stop_check is not None and stop_check(row, token)):
            return "stop"
        if len(self.rows[row]) + self.generated[row] >= self.limit[row]:
            return "length"
        return None

    def done(self) -> bool:
        return not any(self.running)


def stream_tokens(
    model: DecoderLM, prompt_ids: Sequence[int], config: GenerationConfig
) -> Iterator[int]:
    """Yield the generated token ids of one prompt, one at a time."""
    for events in stream_batch(model, [prompt_ids], config):
        for event in events:
            yield event.token


def generate_batch(
    model: DecoderLM,
    prompts: Sequence[Sequence[int]],
    config: GenerationConfig,
    stop_check: StopCheck | None = None,
) -> list[GenerationResult]:
    """Run `stream_batch` to the end; one result per row (prompt x num_return_sequences).

    Timing: prefill_s is the time to the first step's tokens, decode_s the rest.
    """
    start = time.perf_counter()
    first_at = None
    per_row: dict[int, list[TokenEvent]] = {}
    for events in stream_batch(model, prompts, config, stop_check):
        first_at = first_at or time.perf_counter()
        for event in events:
            per_row.setdefault(event.row, []).append(event)
    end = time.perf_counter()
    first_at = first_at or end
    n = config.num_return_sequences
    return [
        _result(per_row[row], len(prompts[row // n]), first_at - start, end - first_at, config)
        for row in sorted(per_row)
    ]


def _result(
    events: list[TokenEvent], prompt_tokens: int, prefill_s: float, decode_s: float,
    config: GenerationConfig,
) -> GenerationResult:
    return GenerationResult(
        token_ids=[e.token for e in events],
        prompt_tokens=prompt_tokens,
        prefill_s=prefill_s,
        decode_s=decode_s,
        finish_reason=events[-1].finish_reason or "length",
        logprobs=[e.logprob for e in events] if config.logprobs else None,
        top_logprobs=[e.top_logprobs for e in events] if config.top_logprobs else None,
    )


def generate(
    model: DecoderLM, prompt_ids: Sequence[int], config: GenerationConfig
) -> GenerationResult:
    """Generate for one prompt (the first sequence if num_return_sequences > 1)."""
    return generate_batch(model, [prompt_ids], config)[0]
