"""zenlm: the whole life of a Transformer language model in one package."""

from zenlm import cpu

# Before torch loads: a forced ZENLM_CPU level narrows PyTorch's kernels too.
cpu.apply_forced_level()

from zenlm.api import LM, load
from zenlm.config import ModelConfig
from zenlm.errors import CheckpointError, UnsafeFormatError, UnsupportedModelError, ZenlmError
from zenlm.tokenizer import Tokenizer

__all__ = [
    "LM",
    "CheckpointError",
    "ModelConfig",
    "Tokenizer",
    "UnsafeFormatError",
    "UnsupportedModelError",
    "ZenlmError",
    "load",
]
__version__ = "0.1.0"
