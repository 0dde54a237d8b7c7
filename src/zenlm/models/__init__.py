"""Models assembled from `zenlm.nn` blocks."""

from zenlm.models.build import build_model, build_skeleton
from zenlm.models.decoder import DecoderLM
from zenlm.models.encoder import EncoderModel

__all__ = ["DecoderLM", "EncoderModel", "build_model", "build_skeleton"]
