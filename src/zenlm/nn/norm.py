"""LayerNorm and RMSNorm."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zenlm import kernels
from zenlm.config import Norm

#: Set to 0 to compute RMSNorm's backward with PyTorch's ops (for an A/B).
ENV_SWITCH = "ZENLM_FUSED_RMSNORM"


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
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
                return _RMSNorm.apply(x, self.weight, self.eps)
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)  # one fused kernel
        if x.dtype == torch.float32:
            return F.rms_norm(x, (x.shape[-1],), self.weight.float(), self.eps).to(
                self.weight.dtype
            )
        x32 = F.rms_norm(x.float(), (x.shape[-1],), None, self.eps)
        return self.weight * x32.to(x.dtype)


class _RMSNorm(torch.autograd.Function):
    """float32 RMSNorm whose forward is PyTorch's fused kernel, backward written out.

    With gradients on, `F.rms_norm` falls back to its composite of small ops on CPU (no
    fused backward kernel there), which cost a small model's training step ~2%.
    y = x * r * w with r = (mean(x^2) + eps)^-1/2 over the last axis; then
    dx = r * (g w - x r^2 mean(g w x)) and dw = sum over rows of g x r: one pass of
    zenlm's C++ op (`torch.ops.zenlm.rms_norm_backward`, zenlm/kernels/elementwise.cpp)
    on CPU when it is built, ~8 of PyTorch's ops otherwise.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor,  # noqa: D102
                eps: float) -> torch.Tensor:
        out, rstd = torch.ops.aten._fused_rms_norm(x, [x.shape[-1]], weight, eps)
        ctx.save_for_backward(x, weight, rstd)  # rstd: (..., 1)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor  # noqa: D102
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        x, weight, rstd = ctx.saved_tensors
        if _fusable(x, rstd):
            grad_x, grad_w = torch.ops.zenlm.rms_norm_backward(grad.contiguous(), x, weight,
                                                               rstd)
            return (grad_x if ctx.needs_input_grad[0] else None,
                    grad_w if ctx.needs_input_grad[1] else None, None)
        normed = x * rstd  # (..., dim)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            g_w = grad * weight
            mean = (g_w * normed).mean(-1, keepdim=True)  # (..., 1)
            grad_x = (g_w - normed * mean) * rstd
        if ctx.needs_input_grad[1]:
            grad_w = (grad * normed).reshape(-1, x.shape[-1]).sum(0)
        return grad_x, grad_w, None


def _fusable(x: torch.Tensor, rstd: torch.Tensor) -> bool:
    """Whether zenlm's C++ backward takes x (..., dim) and rstd (..., 1) (float32 CPU)."""
    return (
        x.device.type == "cpu" and x.is_contiguous() and rstd.is_contiguous()
        and rstd.dtype == torch.float32
        and kernels.fused_op_allowed(ENV_SWITCH)
        and kernels.has_op("rms_norm_backward")
    )


def make_norm(kind: Norm, dim: int, eps: float, bias: bool = True) -> nn.Module:
    """The norm a config names: "rmsnorm" or "layernorm" (with or without a bias)."""
    if kind == "rmsnorm":
        return RMSNorm(dim, eps)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps, bias=bias)
    raise ValueError(f"norm must be 'rmsnorm' or 'layernorm', got {kind!r}")
