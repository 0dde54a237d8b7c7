"""Weight-only int8 (per output channel) and int4 (group-wise) layers.

Both multiply by their packed weights directly, without dequantizing: a decode step
is bound by reading weights, so fewer bytes per weight is more tokens per second.
int8 runs PyTorch's CPU kernel (`aten._weight_int8pack_mm`, on bfloat16 activations:
with float32 inputs it takes a slow reference path, ~20x slower here); int4 runs
zenlm's own (`zenlm/kernels/int4_linear.cpp`, AVX-512 VNNI or AVX2), or PyTorch's
(`aten._weight_int4pack_mm_for_cpu`) on a CPU without either or without a compiler.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from zenlm import kernels
from zenlm.cpu import cpu_info
from zenlm.kernels.layout import GROUP, K_MULTIPLE, pack_codes, unpack_codes

#: From this many input rows on (a prompt), int4 layers on a CPU with native bfloat16
#: dequantize their weight to bfloat16 and multiply with oneDNN. Measured with
#: benchmarks/int4_prompt.py (one SmolLM2 layer, kernel / dequantized time): with
#: AVX512-BF16 0.65 at 64 rows, 0.94 at 128, 1.10 at 512, 1.22 at 1024. Without native
#: bfloat16 the kernel wins at every length (AVX2 against float32 matmuls: 0.33 at 64,
#: 0.81 at 512, 0.98 at 2048), so there it serves prompts too.
PROMPT_ROWS = 256

#: From this many rows on, int8 layers on a CPU without native bfloat16 multiply in
#: float32 (PyTorch's int8 kernel takes bfloat16 activations, emulated there).
INT8_FLOAT_ROWS = 64

#: Weight values quantized at a time (4 MB of float32): quantizing's float temporaries
#: are several times the slice, so a whole output head (32000 x 2048) at once raised a
#: 1.1B model's load peak by ~200 MB.
SLICE_VALUES = 1 << 20


def row_slices(n_rows: int, row_length: int) -> list[slice]:
    """Slices of rows holding about `SLICE_VALUES` values each.

    Each is a multiple of 64 rows: PyTorch's int4 packing takes rows 16 at a time.
    """
    step = max(64, SLICE_VALUES // row_length // 64 * 64)
    return [slice(start, start + step) for start in range(0, n_rows, step)]


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
        N, K = weight.shape
        codes = torch.empty(N, K, dtype=torch.int8)
        scales = torch.empty(N)
        for rows in row_slices(N, K):  # the float temporaries a slice at a time
            w = weight[rows].detach().float()
            scales[rows] = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
            codes[rows] = torch.round(w / scales[rows, None]).to(torch.int8)
        self._set(codes, scales.to(dtype), None if bias is None else bias.detach().to(dtype))

    def _set(self, codes: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.register_buffer("weight", codes)  # (N, K) int8
        self.register_buffer("scales", scales)  # (N,) in the activations' dtype
        self.register_buffer("bias", bias)
        self.out_features, self.in_features = codes.shape
        self.native_bf16 = cpu_info().native_bf16

    @classmethod
    def stacked(cls, parts: Sequence[Int8Linear]) -> Int8Linear:
        """One layer whose output rows are `parts`' rows, in order (q, k, v fused).

        Exactly the layer quantizing the stacked float weights would give (each row
        is quantized on its own), without that float copy.
        """
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        bias = None if parts[0].bias is None else torch.cat([p.bias for p in parts])
        layer._set(torch.cat([p.weight for p in parts]), torch.cat([p.scales for p in parts]),
                   bias)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., K) -> (..., N), in x's dtype (the matmul itself runs on bfloat16 inputs).

        Prompts on a CPU without native bfloat16 multiply by the weight dequantized to
        float32 instead: there PyTorch's int8 kernel emulates bfloat16 arithmetic, slower
        than a float32 matmul once there are many rows.
        """
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        if flat.shape[0] >= INT8_FLOAT_ROWS and not self.native_bf16:
            out = flat.float() @ (self.weight.float() * self.scales.float()[:, None]).T
        else:
            out = torch.ops.aten._weight_int8pack_mm(
                flat.to(self.scales.dtype), self.weight, self.scales
            )
        if self.bias is not None:
            out = out + self.bias
        return out.view(*shape[:-1], self.out_features).to(x.dtype)

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """Dequantized weight rows (*index.shape, K) float32, e.g. a tied embedding's."""
        return self.weight[index].float() * self.scales[index].float()[..., None]

    def dequantized(self) -> torch.Tensor:
        """The float32 weight (N, K) this layer multiplies by."""
        return self.rows(torch.arange(self.out_features))


class Int4Linear(nn.Module):
    """y = x W^T + b with W in 4-bit groups of 32 along K, each with a scale and an offset.

    A group is stored as codes q in 0..15 with w = q * scale + min (asymmetric min/max
    quantization, refined by least squares; GGUF's Q4_1 blocks are this format
    exactly). The matmul is zenlm's own kernel (`zenlm/kernels/int4_linear.cpp`): int8
    activations times 4-bit codes with AVX-512 VNNI or AVX2, reading the packed weights
    directly. On a CPU with native bfloat16, prompts of `PROMPT_ROWS` tokens or more
    multiply by the weight dequantized to bfloat16 instead (oneDNN's bfloat16 matmul
    outruns the kernel's tiles there; elsewhere the kernel is the faster of the two).
    Without the kernel (a CPU with neither ISA, no C++ compiler, or ZENLM_KERNELS=0)
    the layer keeps a copy of its codes in PyTorch's int4 layout and multiplies with
    `aten._weight_int4pack_mm_for_cpu`.

    Args:
        weight: (N, K) float weight; K must be a multiple of 64.
        bias: (N,) or None.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        N, K = weight.shape
        if K % K_MULTIPLE:
            raise ValueError(f"int4 needs in_features divisible by {K_MULTIPLE}, got {K}")
        codes = torch.empty(N, K // 2, dtype=torch.uint8)
        scales = torch.empty(N, K // GROUP, dtype=torch.half)
        mins = torch.empty(N, K // GROUP, dtype=torch.half)
        for rows in row_slices(N, K):  # the float temporaries a slice at a time
            q, scale, zero = quantize_groups(weight[rows].detach().float(), GROUP)
            codes[rows] = pack_codes(q)
            scales[rows] = scale.half()
            mins[rows] = (zero - 8 * scale).half()
        self._set(codes, scales, mins, None if bias is None else bias.detach().float())

    def _set(self, codes: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor,
             bias: torch.Tensor | None) -> None:
        self.kernel = kernels.load()  # "avx512", "avx2" or None
        self.register_buffer("codes", codes)  # (N, K / 2) uint8, the kernel's layout
        self.register_buffer("scales", scales)  # (N, K / 32) float16
        self.register_buffer("mins", mins)  # (N, K / 32) float16
        self.register_buffer("bias", bias)
        self.out_features, self.in_features = codes.shape[0], 2 * codes.shape[1]
        # Rows from which a dequantized bfloat16 matmul beats the kernel (None: never).
        self.prompt_rows = PROMPT_ROWS if cpu_info().native_bf16 else None
        if self.kernel is None:
            self.register_buffer("torch_codes", _torch_int4_codes(codes))
            # PyTorch's groups: w = (q - 8) * scale + zero, (K / 32, N, 2) float32
            zeros = mins.float() + 8 * scales.float()
            self.register_buffer("scales_and_zeros",
                                 torch.stack([scales.float(), zeros], -1).transpose(0, 1)
                                 .contiguous())

    @classmethod
    def stacked(cls, parts: Sequence[Int4Linear]) -> Int4Linear:
        """One layer whose output rows are `parts`' rows, in order (q, k, v fused).

        Exactly the layer quantizing the stacked float weights would give (each row's
        groups are quantized on their own), without that float copy.
        """
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        bias = None if parts[0].bias is None else torch.cat([p.bias for p in parts])
        layer._set(*(torch.cat([getattr(p, name) for p in parts])
                     for name in ("codes", "scales", "mins")), bias)
        return layer

    @property
    def use_kernel(self) -> bool:
        """Whether zenlm's own kernel multiplies (else PyTorch's int4 kernel)."""
        return self.kernel is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., K) -> (..., N) float32 (the kernel quantizes x to int8 blocks itself)."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1]).float().contiguous()
        if self.kernel is None:
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(
                flat, self.torch_codes, GROUP, self.scales_and_zeros)
        elif self.prompt_rows is not None and flat.shape[0] >= self.prompt_rows:
            weight = torch.ops.zenlm.int4_dequantize(self.codes, self.scales, self.mins,
                                                     torch.bfloat16)
            out = (flat.bfloat16() @ weight.T).float()
        else:
            out = torch.ops.zenlm.int4_linear(flat, self.codes, self.scales, self.mins)
        if self.bias is not None:
            out = out + self.bias
        return out.view(*shape[:-1], self.out_features)

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """Dequantized weight rows (*index.shape, K) float32, e.g. a tied embedding's."""
        q = unpack_codes(self.codes[index]).float()  # (..., K)
        q = q.view(*index.shape, -1, GROUP)  # (..., K / 32, 32)
        scale, low = self.scales[index].float(), self.mins[index].float()
        return (q * scale[..., None] + low[..., None]).flatten(-2)

    def dequantized(self) -> torch.Tensor:
        """The float32 weight (N, K) this layer multiplies by."""
        return self.rows(torch.arange(self.out_features))


class QuantizedEmbedding(nn.Module):
    """Embedding lookup from a quantized Linear's rows (a tied output head shares them)."""

    def __init__(self, table: Int8Linear | Int4Linear) -> None:
        super().__init__()
        self.table = table

    @property
    def weight(self) -> torch.Tensor:
        """The stored table (int8 rows or packed int4 codes); its dtype says what it holds."""
        return self.table.weight if isinstance(self.table, Int8Linear) else self.table.codes

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, D) float32 vectors."""
        return self.table.rows(ids)


def _torch_int4_codes(codes: torch.Tensor) -> torch.Tensor:
    """The kernel's packed codes (N, K / 2) -> PyTorch's int4 layout, a slice at a time."""
    N, half = codes.shape
    return torch.cat([
        torch.ops.aten._convert_weight_to_int4pack_for_cpu(
            unpack_codes(codes[rows]).to(torch.int32), 1)
        for rows in row_slices(N, 2 * half)])


def quantize_groups(
    weight: torch.Tensor, group_size: int, refits: int = 6
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit quantization of each group of `group_size` along K.

    Starts from the group's min/max grid. Groups whose weights are not on that grid
    are then refined `refits` times: fit the group's scale and offset to its rounded
    codes by least squares, round again, keep whichever grid errs less (llama.cpp's
    K-quants refine the same way). Groups already on a 4-bit grid (GGUF Q4_1 blocks)
    are kept exactly, and cost nothing more.

    Its float temporaries are several times the weight's size: quantize a big
    weight a slice of rows at a time.

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
        q[off_grid], scales[off_grid], low[off_grid] = _refine(
            groups[off_grid], q[off_grid], scales[off_grid], low[off_grid], refits
        )
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
