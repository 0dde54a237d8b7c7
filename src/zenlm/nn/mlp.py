"""Feed-forward blocks: plain (GELU/ReLU) and gated (SwiGLU)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zenlm.config import Activation
from zenlm.nn.fused import stack_linears
from zenlm.nn.swiglu import swiglu

_ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


class MLP(nn.Module):
    """`down(act(up(x)))`, or gated `down(act(gate(x)) * up(x))` when `gated`.

    Args:
        d_model: Input and output width.
        d_ff: Hidden width.
        activation: One of "gelu", "gelu_tanh", "relu", "silu".
        gated: Add the gate projection (SwiGLU when activation is "silu").
        bias: Biases on the projections.
    """

    def __init__(
        self, d_model: int, d_ff: int, *, activation: Activation, gated: bool, bias: bool
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {list(_ACTIVATIONS)}, got {activation!r}")
        self.act = _ACTIVATIONS[activation]
        self.gate = nn.Linear(d_model, d_ff, bias=bias) if gated else None
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.down = nn.Linear(d_ff, d_model, bias=bias)
        self.gate_up: nn.Linear | None = None

    def fuse_gate_up(self) -> None:
        """Replace gate and up by one Linear over their stacked rows (one matmul)."""
        if self.gate is None:
            return
        self.gate_up = stack_linears((self.gate, self.up))
        del self.gate, self.up
        self.gate = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d_model) -> (B, T, d_model)."""
        if self.gate_up is not None:
            gate, up = self.gate_up(x).chunk(2, dim=-1)
            return self.down(self.act(gate) * up)
        if self.gate is None:
            return self.down(self.act(self.up(x)))
        if self.act is F.silu:  # SwiGLU: one pass each way when training in float32
            return self.down(swiglu(self.gate(x), self.up(x)))
        return self.down(self.act(self.gate(x)) * self.up(x))
