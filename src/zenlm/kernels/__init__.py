"""zenlm's C++ kernels: compiled for this machine's CPU on first use, then cached.

`load()` builds `int4_linear.cpp` with the system's C++ compiler against the installed
torch (a few seconds, once; `make` does it at install time with `python -m
zenlm.kernels`) and registers `torch.ops.zenlm.int4_linear`. Without a compiler,
`load()` returns False and says why; int4 layers then compute through dequantized
weights (correct, but slower than float32: each matmul dequantizes its weight).
"""

from zenlm.kernels.build import build, load

__all__ = ["build", "load"]
