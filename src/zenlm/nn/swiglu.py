"""SwiGLU's elementwise part, silu(gate) * up, in one pass each way when training on CPU.

As PyTorch ops, silu(gate) * up is three passes over (..., d_ff) float32 tensors forward
(and autograd keeps silu(gate) as well as gate and up) and three backward; in a small
model's training step that is a few percent of the time. `swiglu` uses zenlm's C++ ops
(zenlm/kernels/elementwise.cpp: `torch.ops.zenlm.swiglu` and `swiglu_backward`, which
recompute sigmoid(gate) rather than keep it) when gradients are on and both inputs are
contiguous float32 CPU tensors; everything else (inference, bfloat16, CUDA, under
torch.compile, or no kernel on this machine) runs today's `F.silu(gate) * up`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from zenlm import kernels

#: Set to 0 to always use PyTorch's ops (for an A/B, or to rule the kernel out).
ENV_SWITCH = "ZENLM_FUSED_SWIGLU"


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up.

    Args:
        gate: (..., d_ff), the gate projection's output.
        up: (..., d_ff), the up projection's output.

    Returns:
        (..., d_ff), in the inputs' dtype.
    """
    if _fusable(gate, up):
        return _SwiGLU.apply(gate, up)
    return F.silu(gate) * up


def _fusable(gate: torch.Tensor, up: torch.Tensor) -> bool:
    return (
        torch.is_grad_enabled()
        and (gate.requires_grad or up.requires_grad)
        and gate.dtype == torch.float32 and up.dtype == torch.float32
        and gate.device.type == "cpu" and up.device.type == "cpu"
        and gate.shape == up.shape
        and gate.is_contiguous() and up.is_contiguous()
        and kernels.fused_op_allowed(ENV_SWITCH)
        and kernel_available()
    )


def kernel_available() -> bool:
    """Whether zenlm's C++ SwiGLU ops are loaded (built for this CPU on first use)."""
    return kernels.has_op("swiglu")


class _SwiGLU(torch.autograd.Function):
    """silu(gate) * up with zenlm's one-pass forward and backward (float32, contiguous).

    Saves gate and up (not silu(gate)); the backward gives, with s = sigmoid(gate),
    d_up = grad * gate * s and d_gate = grad * up * s * (1 + gate * (1 - s)).
    """

    @staticmethod
    def forward(ctx: Any, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(gate, up)
        return torch.ops.zenlm.swiglu(gate, up)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor  # noqa: D102
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        gate, up = ctx.saved_tensors
        grad_gate, grad_up = torch.ops.zenlm.swiglu_backward(grad.contiguous(), gate, up)
        return (grad_gate if ctx.needs_input_grad[0] else None,
                grad_up if ctx.needs_input_grad[1] else None)
