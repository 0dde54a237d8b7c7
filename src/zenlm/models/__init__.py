"""Models assembled from `zenlm.nn` blocks."""

from zenlm.models.build import build_model, build_skeleton
from zenlm.models.decoder import DecoderLM
from zenlm.models.encoder import EncoderModel
from zenlm.models.seq2seq import Seq2SeqLM

__all__ = ["DecoderLM", "EncoderModel", "Seq2SeqLM", "build_model", "build_skeleton"]
