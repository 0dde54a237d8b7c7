"""Weight-only quantization as a transform that swaps modules on a built model."""

from zenlm.quant.transform import QUANTIZE_MODES, quantize
from zenlm.quant.weights import Int4Linear, Int8Linear, QuantizedEmbedding

__all__ = [
    "QUANTIZE_MODES",
    "Int4Linear",
    "Int8Linear",
    "QuantizedEmbedding",
    "quantize",
]
