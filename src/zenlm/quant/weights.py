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


class Int4Embedding(nn.Module):
    """Embedding lookup from an Int4Linear's rows (a tied output head shares them).

    Reads torch's CPU int4 layout (`_convert_weight_to_int4pack_for_cpu`, torch 2.13):
    rows come in blocks of 64, stored as (K, 32) bytes per block, the low nibble of
    byte (k, j) holding row j's weight k and the high nibble row j + 32's. The tests
    check these rows against the layer's own matmul, so a layout change cannot pass
    unnoticed.
    """

    BLOCK = 64

    def __init__(self, table: Int4Linear) -> None:
        super().__init__()
        if table.out_features % self.BLOCK:
            raise ValueError(f"int4 embedding needs rows ({table.out_features}) divisible by 64")
        self.table = table

    @property
    def weight(self) -> torch.Tensor:
        """The packed table (V, D / 2) uint8; its dtype says how activations are stored."""
        return self.table.packed

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, D) float32 vectors."""
        table = self.table
        K, half = table.in_features, self.BLOCK // 2
        blocks = table.packed.view(-1, K, half)  # (V / 64, K, 32)
        block, within = ids // self.BLOCK, ids % self.BLOCK
        packed = blocks[block, :, within % half]  # (B, T, K)
        q = (packed >> (4 * (within >= half)).to(torch.uint8)[..., None]) & 15
        q = q.view(*ids.shape, -1, table.group_size).float()  # (B, T, K / group, group)
        scale, zero = table.scales_and_zeros[:, ids].float().movedim(0, -2).unbind(-1)
        return ((q - 8) * scale[..., None] + zero[..., None]).flatten(-2)  # (B, T, K)


def quantize_groups(
    weight: torch.Tensor, group_size: int, refits: int = 6
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit quantization of each group of `group_size` along K.

    Starts from the group's min/max grid. Groups whose weights are not on that grid
    are then refined `refits` times: fit the group's scale and offset to its rounded
    codes by least squares, round again, keep whichever grid errs less (llama.cpp's
    K-quants refine the same way). Groups already on a 4-bit grid (GGUF Q4_1 blocks)
    are kept exactly, and cost nothing more.

    Returns:
        q (N, K) int32 in 0..15, scales (N, K/group), zeros (N, K/group), with
        w ~= (q - 8) * scale + zero.
    """
    N, K = weight.shape
    groups = weight.view(N, K // group_size, group_size)
    low, high = groups.amin(dim=-1), groups.amax(dim=-1)  # (N, G)
    scales = ((high - low) / 15).clamp(min=1e-12)
    q = _codes(groups, scales, low)
    off_grid = (q * scales[..., None] + low[..., None] - groups).abs().amax(-1) > 1e-3 * scales
    if refits and off_grid.any():
        todo = off_grid.nonzero(as_tuple=True)
        # In slices, so that the refits' temporaries stay a few MB instead of copies
        # of a whole output head.
        for rows in torch.arange(len(todo[0])).split(65536):
            at = (todo[0][rows], todo[1][rows])
            q[at], scales[at], low[at] = _refine(groups[at], q[at], scales[at], low[at], refits)
    return q.view(N, K).to(torch.int32), scales, low + 8 * scales


def _codes(groups: torch.Tensor, scales: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """Nearest 4-bit codes (..., group) of each group on the grid low + scale * q."""
    return torch.round((groups - low[..., None]) / scales[..., None]).clamp(0, 15)


def _refine(
    groups: torch.Tensor, q: torch.Tensor, scales: torch.Tensor, low: torch.Tensor, refits: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Least-squares refits of groups (M, group) from codes q (M, group) on grids (M,).

    Returns the better codes, scales and lows of each group.
    """
    error = _error(groups, q, scales, low)
    for _ in range(refits):
        fitted_scale, fitted_low = _fit_grid(groups, q)
        fitted_q = _codes(groups, fitted_scale, fitted_low)
        fitted_error = _error(groups, fitted_q, fitted_scale, fitted_low)
        better = fitted_error < error
        q = torch.where(better[:, None], fitted_q, q)
        scales = torch.where(better, fitted_scale, scales)
        low = torch.where(better, fitted_low, low)
        error = torch.minimum(error, fitted_error)
    return q, scales, low


def _fit_grid(groups: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares scale and offset (M,) of w ~= q * scale + offset per group (M, group)."""
    q_mean, w_mean = q.mean(-1, keepdim=True), groups.mean(-1, keepdim=True)
    covariance = ((q - q_mean) * (groups - w_mean)).sum(-1)
    variance = ((q - q_mean) ** 2).sum(-1)
    scale = torch.where(variance > 0, covariance / variance.clamp(min=1e-12), 0.0)
    scale = scale.clamp(min=1e-12)  # a constant group keeps a tiny positive scale
    return scale, (w_mean - q_mean * scale[..., None]).squeeze(-1)


def _error(groups: torch.Tensor, q: torch.Tensor, scale: torch.Tensor,
           low: torch.Tensor) -> torch.Tensor:
    """Squared error (M,) of codes q (M, group) on the grids low + scale * q."""
    return ((q * scale[:, None] + low[:, None] - groups) ** 2).sum(-1)
