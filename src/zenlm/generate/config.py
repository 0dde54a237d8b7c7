"""What to generate and how to choose tokens: `GenerationConfig`, validated by name."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from zenlm.errors import InvalidParameter
from zenlm.generate.sampling import SamplingParams


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
        min_new_tokens: Stop tokens are forbidden until this many tokens were generated.
        no_repeat_ngram_size: No n-gram of this size occurs twice in the decoder's tokens
            (its prompt included, an encoder-decoder's start token too); 0 is off.
        forced_bos_token_id: The first generated token (None: not forced).
        forced_eos_token_id: The token generated at the last allowed step, when the
            length limit is reached (None: not forced).
        use_cross_cache: An encoder-decoder projects its encoder output into every
            layer's cross-attention keys and values once per source (True) or again at
            every step (False: slower, the same tokens; a check on the cache).
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
    min_new_tokens: int = 0
    no_repeat_ngram_size: int = 0
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | None = None
    use_cross_cache: bool = True

    def validate(self) -> None:
        """Raise InvalidParameter (a ValueError) for the first parameter out of its range."""
        _check_int(self.max_new_tokens, "max_new_tokens", 1)
        _check_float(self.temperature, "temperature", 0.0, math.inf, "a finite number >= 0")
        _check_int(self.top_k, "top_k", 0, note=" (0 disables it)")
        if not (isinstance(self.top_p, (int, float)) and 0.0 < self.top_p <= 1.0):
            raise InvalidParameter("top_p", f"top_p must be in (0, 1], got {self.top_p!r}")
        _check_float(self.min_p, "min_p", 0.0, 1.0, "in [0, 1)", high_open=True)
        _check_float(self.repetition_penalty, "repetition_penalty", 0.0, math.inf, "> 0",
                     low_open=True)
        _check_float(self.presence_penalty, "presence_penalty", -2.0, 2.0, "in [-2, 2]")
        _check_float(self.frequency_penalty, "frequency_penalty", -2.0, 2.0, "in [-2, 2]")
        _check_int(self.num_return_sequences, "num_return_sequences", 1)
        _check_int(self.top_logprobs, "top_logprobs", 0, 20)
        _check_int(self.num_beams, "num_beams", 1)
        _check_float(self.length_penalty, "length_penalty", -math.inf, math.inf, "finite")
        _check_int(self.min_new_tokens, "min_new_tokens", 0)
        _check_int(self.no_repeat_ngram_size, "no_repeat_ngram_size", 0, note=" (0 disables it)")
        for name in ("forced_bos_token_id", "forced_eos_token_id"):
            if getattr(self, name) is not None:
                _check_int(getattr(self, name), name, 0, note=" or None")
        if self.seed is not None and not isinstance(self.seed, int):
            raise InvalidParameter("seed", f"seed must be an integer or None, got {self.seed!r}")

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
        raise InvalidParameter(name, f"{name} must be an integer {valid}{note}, got {value!r}")


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
        raise InvalidParameter(name, f"{name} must be {valid}, got {value!r}")
