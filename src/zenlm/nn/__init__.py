"""Building blocks shared by encoders, decoders and encoder-decoders."""

from zenlm.nn.attention import Attention
from zenlm.nn.block import Block
from zenlm.nn.kv_cache import KVCache
from zenlm.nn.masks import build_mask
from zenlm.nn.mlp import MLP
from zenlm.nn.norm import RMSNorm, make_norm
from zenlm.nn.positions import LearnedPositions, SinusoidalPositions
from zenlm.nn.rope import RotaryEmbedding, apply_rope

__all__ = [
    "MLP",
    "Attention",
    "Block",
    "KVCache",
    "LearnedPositions",
    "RMSNorm",
    "RotaryEmbedding",
    "SinusoidalPositions",
    "apply_rope",
    "build_mask",
    "make_norm",
]
