"""Text generation: sampling as pure functions, and one decoding loop as an iterator."""

from zenlm.generate.decode import (
    GenerationConfig,
    GenerationResult,
    TokenEvent,
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
    "TextStream",
    "TokenEvent",
    "generate",
    "generate_batch",
    "sample_next",
    "stream_batch",
    "stream_tokens",
]
