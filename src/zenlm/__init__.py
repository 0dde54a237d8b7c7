"""zenlm: the whole life of a Transformer language model in one package.

`LM` and `load` (zenlm.api, which needs torch) are imported on first use, so that
`import zenlm.config` or `zenlm.errors` stays cheap and works without torch.
"""

from typing import TYPE_CHECKING, Any

from zenlm import cpu

# Before torch loads: a forced ZENLM_CPU level narrows PyTorch's kernels too.
cpu.apply_level()

from zenlm.config import ModelConfig
from zenlm.errors import (
    CheckpointError,
    InvalidParameter,
    UnsafeFormatError,
    UnsupportedModelError,
    ZenlmError,
)
from zenlm.tokenizer import Tokenizer

if TYPE_CHECKING:
    from zenlm.api import LM, load

__all__ = [
    "LM",
    "CheckpointError",
    "InvalidParameter",
    "ModelConfig",
    "Tokenizer",
    "UnsafeFormatError",
    "UnsupportedModelError",
    "ZenlmError",
    "load",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("LM", "load"):
        from zenlm.api import LM, load

        return {"LM": LM, "load": load}[name]
    raise AttributeError(f"module 'zenlm' has no attribute {name!r}")
