"""Models assembled from `zenlm.nn` blocks."""

from zenlm.models.build import build_model
from zenlm.models.decoder import DecoderLM

__all__ = ["DecoderLM", "build_model"]
