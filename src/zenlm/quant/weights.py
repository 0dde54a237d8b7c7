"""Weight-only int8 (per output channel) and int4 (group-wise) layers.

They run PyTorch's CPU kernels for weight-only quantized matmul
(`aten._weight_int8pack_mm`, `aten._weight_int4pack_mm_for_cpu`), which read the
packed weights directly: a decode step is bound by reading weights, so fewer bytes
per weight is more tokens per second. Activations are bfloat16: with float32
inputs the same kernels take a slow reference path (~20x slower here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Int8Linear(nn.Module):
    """y = x W^T + b with W stored as int8 rows times one scale per row.

    Args:
        weight: (N, K) float weight to quantize (symmetric, per output channel).
        bias: (N,) or None.
        dtype: Activation dtype (bfloat16 is the fast one).
    """

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype = torch.bfloat16
    ) -> None:
        super().__init__()
        w = weight.detach().float()
        scales = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0  # (N,)
        self.register_buffer("weight", torch.round(w / scales[:, None]).to(torch.int8))
        self.register_buffer("scales", scales.to(dtype))
        self.register_buffer("bias", None if bias is None else bias.detach().to(dtype))
        self.in_features, self.out_features = w.shape[1], w.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., K) -> (..., N), in x's dtype (the matmul itself runs on bfloat16 inputs)."""
        shape = x.shape
        out = torch.ops.aten._weight_int8pack_mm(
            x.reshape(-1, shape[-1]).to(self.scales.dtype), self.weight, self.scales
        )
        if self.bias is not None:
            out = out + self.bias
        return out.view(*shape[:-1], self.out_features).to(x.dtype)

    def dequantized(self) -> torch.Tensor:
        """The float32 weight (N, K) this layer multiplies by."""
        return self.weight.float() * self.scales.float()[:, None]


class Int8Embedding(nn.Module):
    """Embedding lookup from an Int8Linear's rows (a tied output head shares them)."""

    def __init__(self, table: Int8Linear) -> None:
        super().__init__()
        self.table = table

    @property
    def weight(self) -> torch.Tensor:
        """The int8 table (V, D); its dtype says how activations are stored."""
        return self.table.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, D) float32 vectors."""
        rows = F.embedding(ids, self.table.weight).float()
        return rows * self.table.scales[ids].float()[..., None]


class Int4Linear(nn.Module):
    """y = x W^T + b with W in 4-bit groups along K, each with a scale and an offset.

    A group of `group_size` input weights is stored as q in 0..15 with
    w = (q - 8) * scale + zero (asymmetric min/max quantization). GGUF's Q4_1 blocks
    (w = d * q + m, 32 weights) are this format exactly: scale = d, zero = m + 8 d.

    Args:
        weight: (N, K) float weight; K must be a multiple of group_size.
        bias: (N,) or None.
        group_size: Weights per group (32, 64, 128 or 256).
        dtype: Activation dtype (bfloat16 is the fast one).
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        group_size: int = 32,
        dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        super().__init__()
        N, K = weight.shape
        if K % group_size:
            raise ValueError(f"int4 needs in_features ({K}) divisible by group_size ({group_size})")
        q, scales, zeros = quantize_groups(weight.detach().float(), group_size)
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1))
        # (K / group, N, 2): the kernel's layout of scales and zero points.
        self.register_buffer("scales_and_zeros", torch.stack([scales, zeros], dim=-1)
                             .transpose(0, 1).contiguous().to(dtype))
        self.register_buffer("bias", None if bias is None else bias.detach().to(dtype))
        self.group_size, self.in_features, self.out_features = group_size, K, N

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., K) -> (..., N), in x's dtype (the matmul itself runs on bfloat16 inputs)."""
        shape = x.shape
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(
            x.reshape(-1, shape[-1]).to(self.scales_and_zeros.dtype), self.packed,
            self.group_size, self.scales_and_zeros,
        )
        if self.bias is not None:
            out = out + self.bias
        return out.view(*shape[:-1], self.out_features).to(x.dtype)

    def dequantized(self) -> torch.Tensor:
        """The float32 weight (N, K) this layer multiplies by (slow; for tests)."""
        eye = torch.eye(self.in_features, dtype=self.scales_and_zeros.dtype)
        return self(eye).float().T.contiguous()


def quantize_groups(
    weight: torch.Tensor, group_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit min/max quantization of each group of `group_size` along K.

    Returns:
        q (N, K) int32 in 0..15, scales (N, K/group), zeros (N, K/group), with
        w ~= (q - 8) * scale + zero.
    """
    N, K = weight.shape
    groups = weight.view(N, K // group_size, group_size)
    low, high = groups.amin(dim=-1), groups.amax(dim=-1)  # (N, G)
    scales = ((high - low) / 15).clamp(min=1e-12)
    q = torch.round((groups - low[..., None]) / scales[..., None]).clamp(0, 15)
    return q.view(N, K).to(torch.int32), scales, low + 8 * scales
