"""zenlm's C++ kernels: compiled for this machine's CPU on first use, then cached.

`load()` builds `int4_linear.cpp` for this CPU's level (AVX-512 VNNI or AVX2; see
zenlm.cpu) with the system's C++ compiler against the installed torch (a few seconds,
once; `make` does it at install time with `python -m zenlm.kernels`), registers
`torch.ops.zenlm.int4_linear` and returns the path in use. Without a compiler, or on a
CPU without AVX2, it returns None and says why in one line; int4 layers then multiply
with PyTorch's own int4 kernel.

`elementwise.cpp` adds training's one-pass float32 ops (`torch.ops.zenlm.swiglu`,
`swiglu_backward`, `rope`, `rms_norm_backward`; used by zenlm.nn's SwiGLU, RoPE and
RMSNorm when gradients are on); `has_op(name)` says whether one is loaded. Without them
those layers compute with PyTorch's ops, as they do for inference.
"""

import functools
import os

from zenlm.kernels.build import build, load

__all__ = ["build", "fused_op_allowed", "has_op", "load"]


@functools.cache
def has_op(name: str) -> bool:
    """Whether `torch.ops.zenlm.<name>` is loaded (building the kernels on first use)."""
    import torch

    return load() is not None and hasattr(torch.ops.zenlm, name)


def fused_op_allowed(switch: str) -> bool:
    """Whether a training layer may call one of zenlm's fused ops now.

    Not under torch.compile (it fuses PyTorch's ops itself and has no fake kernel for
    ours), and not when the layer's A/B environment variable `switch` is "0". Whether the
    op is built at all is `has_op`'s question.
    """
    import torch

    return not torch.compiler.is_compiling() and os.environ.get(switch, "1") != "0"
