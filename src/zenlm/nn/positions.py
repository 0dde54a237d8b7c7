"""Absolute position embeddings: learned (GPT-2, BERT) and sinusoidal (Transformer, Marian)."""

from __future__ import annotations

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
    """Fixed sin/cos positions of "Attention Is All You Need", in Marian's layout.

    Frequency i (of dim/2) is w_i = 1 / base^(2i/dim). The paper interleaves
    (sin(pos w_i) at 2i, cos(pos w_i) at 2i+1); transformers' Marian (whose weights
    zenlm will import) puts every sine in the first half and every cosine in the
    second: PE[pos, i] = sin(pos w_i) and PE[pos, dim/2 + i] = cos(pos w_i). The two
    are the same vectors with their features permuted, so a model trained from scratch
    learns equally well with either; Marian's is the one a checkpoint needs.

    Nothing is stored: the table is computed from the positions on their device, in
    float64 where the device has it (as Marian's table is), so a model built on the meta
    device or cast to bfloat16 keeps exact angles even at position 10^4.

    Args:
        dim: Width of each vector (even).
        base: Wavelength base (10000 in the paper).
    """

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"sinusoidal positions need an even dim, got {dim}")
        self.dim, self.base = dim, base

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """Positions (B, T) -> vectors (B, T, dim), float32 (callers cast to their dtype)."""
        wide = torch.float32 if positions.device.type == "mps" else torch.float64
        exponent = torch.arange(0, self.dim, 2, dtype=wide, device=positions.device) / self.dim
        angles = positions.to(wide)[..., None] * self.base**-exponent  # (B, T, dim/2)
        return torch.cat((angles.sin(), angles.cos()), dim=-1).float()

    def extra_repr(self) -> str:
        """Shown by print(model)."""
        return f"dim={self.dim}, base={self.base}"
