"""Absolute position embeddings: learned (GPT-2, BERT) and sinusoidal (Transformer, Marian)."""

from __future__ import annotations

import math

import torch
from torch import nn


class LearnedPositions(nn.Module):
    """A table of `max_len` learned position vectors.

    Args:
        max_len: Number of positions.
        dim: Width of each vector.
    """

    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(max_len, dim))

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """Positions (B, T) -> vectors (B, T, dim)."""
        if positions.numel() and int(positions.max()) >= self.weight.shape[0]:
            raise ValueError(
                f"position {int(positions.max())} is beyond the model's "
                f"{self.weight.shape[0]} learned positions"
            )
        return self.weight[positions]


class SinusoidalPositions(nn.Module):
    """Fixed sin/cos positions of "Attention Is All You Need": sin on even, cos on odd.

    Args:
        dim: Width of each vector (even).
        base: Wavelength base (10000 in the paper).
    """

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"sinusoidal positions need an even dim, got {dim}")
        exponent = torch.arange(0, dim, 2, dtype=torch.float64, device="cpu") / dim
        self.register_buffer("inv_freq", (1.0 / base**exponent).float(), persistent=False)
        self.dim = dim

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """Positions (B, T) -> vectors (B, T, dim), float32."""
        angles = positions.float()[..., None] * self.inv_freq  # (B, T, dim/2)
        out = torch.empty(*positions.shape, self.dim, device=positions.device)
        out[..., 0::2] = torch.sin(angles)
        out[..., 1::2] = torch.cos(angles)
        return out


def sinusoidal_reference(position: int, index: int, dim: int, base: float = 10000.0) -> float:
    """One entry of the sinusoidal table, written out as in the paper (for tests)."""
    angle = position / base ** (2 * (index // 2) / dim)
    return math.sin(angle) if index % 2 == 0 else math.cos(angle)
