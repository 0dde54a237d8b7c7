"""LayerNorm and RMSNorm."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zenlm.config import Norm


class RMSNorm(nn.Module):
    """Root-mean-square norm (Llama family), computed in float32 like the reference.

    Args:
        dim: Size of the last axis.
        eps: Added to the mean square before the square root.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise `x` (..., dim) over its last axis."""
        if x.dtype == torch.float32:  # one fused kernel instead of seven small ops
            return F.rms_norm(x, (x.shape[-1],), self.weight.float(), self.eps).to(
                self.weight.dtype
            )
        x32 = F.rms_norm(x.float(), (x.shape[-1],), None, self.eps)
        return self.weight * x32.to(x.dtype)


def make_norm(kind: Norm, dim: int, eps: float, bias: bool = True) -> nn.Module:
    """The norm a config names: "rmsnorm" or "layernorm" (with or without a bias)."""
    if kind == "rmsnorm":
        return RMSNorm(dim, eps)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps, bias=bias)
    raise ValueError(f"norm must be 'rmsnorm' or 'layernorm', got {kind!r}")
