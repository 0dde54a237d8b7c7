"""Text generation: one core (a row's state, one prefill, one sampler) and its drivers."""

from zenlm.generate.config import GenerationConfig
from zenlm.generate.core import Sequence, TokenEvent, advance, prefill, sample_rows
from zenlm.generate.decode import (
    GenerationResult,
    generate,
    generate_batch,
    stream_batch,
    stream_tokens,
)
from zenlm.generate.sampling import SamplingParams, sample_next
from zenlm.generate.text import TextStream

__all__ = [
    "GenerationConfig",
    "GenerationResult",
    "SamplingParams",
    "Sequence",
    "TextStream",
    "TokenEvent",
    "advance",
    "generate",
    "generate_batch",
    "prefill",
    "sample_next",
    "sample_rows",
    "stream_batch",
    "stream_tokens",
]
