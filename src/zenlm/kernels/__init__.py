"""zenlm's C++ kernels: compiled for this machine's CPU on first use, then cached.

`load()` builds `int4_linear.cpp` for this CPU's level (AVX-512 VNNI or AVX2; see
zenlm.cpu) with the system's C++ compiler against the installed torch (a few seconds,
once; `make` does it at install time with `python -m zenlm.kernels`), registers
`torch.ops.zenlm.int4_linear` and returns the path in use. Without a compiler, or on a
CPU without AVX2, it returns None and says why in one line; int4 layers then multiply
with PyTorch's own int4 kernel.
"""

import functools

from zenlm.kernels.build import build, load

__all__ = ["build", "has_op", "load"]


@functools.cache
def has_op(name: str) -> bool:
    """Whether `torch.ops.zenlm.<name>` is loaded (building the kernels on first use)."""
    import torch

    return load() is not None and hasattr(torch.ops.zenlm, name)
