"""A static, preallocated key/value cache (one buffer per layer, written in place)."""

from __future__ import annotations

import torch
from torch import nn


class KVCache(nn.Module):
    """Keys and values of every layer for up to `max_len` positions of `batch` sequences.

    Slots are shared across the batch: slot `s` holds the s-th token fed to the model,
    whatever that token's position id (left-padded rows have their own position ids).

    Args:
        n_layers: Number of attention layers.
        batch: Number of sequences.
        max_len: Slots per sequence (prompt + generated tokens).
        n_kv_heads: Key/value heads per layer.
        head_dim: Size of one head.
        dtype: Storage dtype (the model's activation dtype).
    """

    def __init__(
        self,
        n_layers: int,
        batch: int,
        max_len: int,
        n_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        shape = (batch, n_kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.max_len = max_len
        self.length = 0  # slots filled so far

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write new k, v (B, Hkv, T, D) after the filled slots; return all filled (B, Hkv, S, D).

        The caller advances `length` once per forward pass (after the last layer).
        """
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {end} were asked for")
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, n: int) -> None:
        """Mark `n` more slots filled."""
        self.length += n
