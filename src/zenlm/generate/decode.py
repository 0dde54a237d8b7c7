"""One generation loop: prefill the prompt into a KV cache, then decode token by token.

`stream_tokens` is the loop, as an iterator; `generate` collects it and times it.
Chat, the CLI and (later) the server all wrap these.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from zenlm.generate.sampling import sample_next
from zenlm.models import DecoderLM


@dataclass
class GenerationConfig:
    """What to generate and how to choose tokens.

    Attributes:
        max_new_tokens: Upper bound on generated tokens (>= 1).
        temperature: 0 for greedy; > 0 samples from softmax(logits / temperature).
        top_k: Keep the k most likely tokens before sampling (0: all).
        top_p: Nucleus sampling threshold in (0, 1].
        seed: Seed for reproducible sampling (None: nondeterministic).
        stop_token_ids: Generation ends after any of these (it is kept in token_ids).
    """

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: Sequence[int] = field(default_factory=tuple)

    def validate(self) -> None:
        """Raise ValueError naming the first parameter outside its valid range."""
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 disables it), got {self.top_k!r}")
        if not (0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")


@dataclass
class GenerationResult:
    """Generated tokens and how long each phase took."""

    token_ids: list[int]
    prompt_tokens: int
    prefill_s: float
    decode_s: float
    finish_reason: str  # "stop" or "length"

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens per second after the first (the first comes out of prefill)."""
        steps = len(self.token_ids) - 1
        return steps / self.decode_s if steps > 0 and self.decode_s > 0 else 0.0


@torch.inference_mode()
def stream_tokens(
    model: DecoderLM, prompt_ids: Sequence[int], config: GenerationConfig
) -> Iterator[int]:
    """Yield generated token ids one at a time (batch of one, greedy or sampled).

    Raises:
        ValueError: empty prompt, a prompt that leaves no room in the context, or an
            invalid GenerationConfig.
    """
    config.validate()
    if not prompt_ids:
        raise ValueError("prompt is empty: give at least one token")
    context = model.config.max_seq_len
    if len(prompt_ids) >= context:
        raise ValueError(
            f"prompt has {len(prompt_ids)} tokens; the model's context is {context}, "
            f"so at most {context - 1} leave room to generate"
        )
    total = min(context, len(prompt_ids) + config.max_new_tokens)
    cache = model.new_cache(batch=1, max_len=total)
    generator = torch.Generator().manual_seed(config.seed) if config.seed is not None else None
    stop = set(config.stop_token_ids)
    device = model.embed.weight.device
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)  # (1, T)
    for _ in range(total - len(prompt_ids)):
        logits = model(ids, cache=cache)[:, -1]  # (1, V)
        token = sample_next(
            logits, temperature=config.temperature, top_k=config.top_k, top_p=config.top_p,
            generator=generator,
        )
        yield int(token)
        if int(token) in stop:
            return
        ids = token[:, None]  # (1, 1)


def generate(
    model: DecoderLM, prompt_ids: Sequence[int], config: GenerationConfig
) -> GenerationResult:
    """Run `stream_tokens` to the end and time prefill (first token) and decode (the rest)."""
    tokens: list[int] = []
    start = time.perf_counter()
    first_at = start
    for token in stream_tokens(model, prompt_ids, config):
        if not tokens:
            first_at = time.perf_counter()
        tokens.append(token)
    end = time.perf_counter()
    stopped = bool(tokens) and tokens[-1] in set(config.stop_token_ids)
    return GenerationResult(
        token_ids=tokens,
        prompt_tokens=len(prompt_ids),
        prefill_s=first_at - start,
        decode_s=end - first_at,
        finish_reason="stop" if stopped else "length",
    )
