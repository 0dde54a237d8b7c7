"""Position encodings: learned (GPT-2, BERT), sinusoidal (Transformer, Marian), T5's bias."""

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


class RelativePositionBias(nn.Module):
    """T5's learned attention bias per head, indexed by a bucket of key - query distance.

    Distances below half the buckets (per direction) have a bucket each; longer ones
    share buckets spaced logarithmically up to `max_distance`, past which all share the
    last. An encoder's buckets tell before from after (bidirectional); a decoder's
    count only distances back (later keys are masked anyway).

    Args:
        n_buckets: Number of buckets (32 in T5).
        max_distance: Distance where the last bucket starts (128 in T5).
        n_heads: Attention heads (one bias per head and bucket).
        bidirectional: Separate buckets for keys after the query (encoders).
    """

    def __init__(self, n_buckets: int, max_distance: int, n_heads: int, *,
                 bidirectional: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_buckets, n_heads))
        self.n_buckets, self.max_distance = n_buckets, max_distance
        self.bidirectional = bidirectional

    def forward(self, query_positions: torch.Tensor, key_positions: torch.Tensor) -> torch.Tensor:
        """Bias (B, H, T, S) for query positions (B, T) and key positions (B, S)."""
        distance = key_positions[:, None, :] - query_positions[:, :, None]  # (B, T, S)
        return self.weight[self.bucket(distance)].permute(0, 3, 1, 2)

    def bucket(self, distance: torch.Tensor) -> torch.Tensor:
        """Bucket index of each key - query distance (any shape, long)."""
        buckets, offset = self.n_buckets, torch.zeros_like(distance)
        if self.bidirectional:
            buckets //= 2
            offset = (distance > 0).long() * buckets
            distance = distance.abs()
        else:
            distance = (-distance).clamp(min=0)
        exact = buckets // 2
        # log-spaced above `exact`; clamp(min=1) only keeps log() finite where unused
        far = exact + (
            torch.log(distance.clamp(min=1).float() / exact)
            / math.log(self.max_distance / exact) * (buckets - exact)
        ).long()
        far = far.clamp(max=buckets - 1)
        return offset + torch.where(distance < exact, distance, far)

    def extra_repr(self) -> str:
        """Shown by print(model)."""
        return (f"buckets={self.n_buckets}, max_distance={self.max_distance}, "
                f"bidirectional={self.bidirectional}")
