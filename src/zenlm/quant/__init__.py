"""Weight-only quantization as a transform that swaps modules on a built model."""

from zenlm.quant.transform import QUANTIZE_MODES, apply_quantization, quantize, quantize_part
from zenlm.quant.weights import Int4Linear, Int8Linear, QuantizedEmbedding

__all__ = [
    "QUANTIZE_MODES",
    "Int4Linear",
    "Int8Linear",
    "QuantizedEmbedding",
    "apply_quantization",
    "quantize",
    "quantize_part",
]
