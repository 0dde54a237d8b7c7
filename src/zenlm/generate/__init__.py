"""Text generation: sampling as pure functions, and one decoding loop as an iterator."""

from zenlm.generate.decode import GenerationConfig, GenerationResult, generate, stream_tokens
from zenlm.generate.sampling import sample_next

__all__ = ["GenerationConfig", "GenerationResult", "generate", "sample_next", "stream_tokens"]
