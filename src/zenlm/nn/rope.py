"""Rotary position embeddings, with the scaling variants config files declare.

Layout is "rotate half" (GPT-NeoX / transformers): the first and second halves of a
head are the two coordinates of each rotated pair. GGUF files store Q/K permuted for
llama.cpp's interleaved layout; the GGUF loader undoes that, so one layout serves all.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from zenlm import kernels

#: Set to 0 to rotate with PyTorch's ops when training (for an A/B).
ENV_SWITCH = "ZENLM_FUSED_ROPE"


def rope_inv_freq(head_dim: int, theta: float, scaling: dict[str, Any] | None) -> torch.Tensor:
    """Inverse frequencies (head_dim / 2,) float32 for plain, linear, llama3 or yarn RoPE."""
    # Explicit device: stays on the CPU when a model is built on the meta device.
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").float() / head_dim
    inv_freq = 1.0 / (theta**exponent)
    rope_type = (scaling or {}).get("rope_type", "default")
    if rope_type == "default":
        return inv_freq
    if rope_type == "linear":
        return inv_freq / scaling["factor"]
    if rope_type == "llama3":
        return _llama3_inv_freq(inv_freq, scaling)
    if rope_type == "yarn":
        return _yarn_inv_freq(head_dim, theta, scaling)
    raise ValueError(f"unsupported rope_type {rope_type!r}; use default, linear, llama3 or yarn")


def _llama3_inv_freq(inv_freq: torch.Tensor, scaling: dict[str, Any]) -> torch.Tensor:
    """Llama 3.1: keep high frequencies, divide low ones by `factor`, blend in between."""
    factor = scaling["factor"]
    low_ff, high_ff = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low_ff, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low_ff) / (high_ff - low_ff)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high_ff) & (wavelen <= old_len / low_ff)
    return torch.where(medium, blended, scaled)


def _yarn_inv_freq(head_dim: int, theta: float, scaling: dict[str, Any]) -> torch.Tensor:
    """YaRN: interpolate low frequencies, extrapolate high ones, linear ramp between."""
    factor = scaling["factor"]
    old_len = scaling["original_max_position_embeddings"]
    beta_fast, beta_slow = scaling.get("beta_fast") or 32, scaling.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:
        return head_dim * math.log(old_len / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    pos_freqs = theta ** (torch.arange(0, head_dim, 2, device="cpu").float() / head_dim)
    ramp = ((torch.arange(head_dim // 2, device="cpu").float() - low) / (high - low)).clamp(0, 1)
    extrapolation = 1 - ramp
    return (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation


class RotaryEmbedding(nn.Module):
    """cos/sin tables for given positions.

    Args:
        head_dim: Size of one attention head (even).
        theta: Base wavelength.
        scaling: A config's rope_scaling dict, or None.
        attention_factor: Multiplies cos and sin (YaRN's mscale; 1.0 otherwise).
    """

    def __init__(
        self,
        head_dim: int,
        theta: float,
        scaling: dict[str, Any] | None = None,
        attention_factor: float = 1.0,
    ) -> None:
        super().__init__()
        self.register_buffer("inv_freq", rope_inv_freq(head_dim, theta, scaling), persistent=False)
        self.attention_factor = attention_factor

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """Positions (B, T) -> (cos, sin), each (B, T, 1, head_dim) in `dtype`.

        The head axis is 1 so that one table broadcasts over the heads of q and k.
        """
        freqs = positions.float()[..., None] * self.inv_freq  # (B, T, D/2), float32
        angles = torch.cat((freqs, freqs), dim=-1)[:, :, None]  # (B, T, 1, D)
        cos = angles.cos() * self.attention_factor
        sin = angles.sin() * self.attention_factor
        return cos.to(dtype), sin.to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, T, H, D) by the angles in cos/sin (B, T, 1, D)."""
    tables_trained = cos.requires_grad or sin.requires_grad
    if torch.is_grad_enabled() and x.requires_grad and not tables_trained:
        return _Rotate.apply(x, cos, sin)
    return _rotate(x, cos, sin)


def _fusable(x: torch.Tensor, table: torch.Tensor) -> bool:
    """Whether zenlm's one-pass C++ rotation takes x (B, T, H, D) and table (B or 1, T, 1, D)."""
    return (
        x.dtype == torch.float32 and table.dtype == torch.float32
        and x.device.type == "cpu" and table.device.type == "cpu"
        and x.dim() == 4 and table.dim() == 4
        and table.shape[0] in (1, x.shape[0]) and table.shape[1:] == (x.shape[1], 1, x.shape[3])
        and x.is_contiguous() and table.is_contiguous()
        and kernels.fused_op_allowed(ENV_SWITCH)
        and kernels.has_op("rope")
    )


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class _Rotate(torch.autograd.Function):
    """RoPE with its backward written out: the rotation by minus the angles.

    Autograd's own backward of `_rotate` goes through two slice backwards, each a
    zero-filled full-size tensor plus a copy and an add; this one is two multiplies and
    a concatenation (about 5% of a small model's training step on CPU). For float32
    contiguous (B, T, H, D) inputs on CPU, both ways are one pass of zenlm's C++ op
    (`torch.ops.zenlm.rope`, zenlm/kernels/elementwise.cpp) instead of ~5 of PyTorch's.
    cos/sin are tables, not trained: they get no gradient.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, cos: torch.Tensor,  # noqa: D102
                sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        ctx.fused = _fusable(x, cos) and _fusable(x, sin)
        if ctx.fused:
            return torch.ops.zenlm.rope(x, cos, sin, False)
        return _rotate(x, cos, sin)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # noqa: D102
        cos, sin = ctx.saved_tensors
        if ctx.fused:
            return torch.ops.zenlm.rope(grad.contiguous(), cos, sin, True), None, None
        half = grad.shape[-1] // 2
        g_sin = grad * sin
        # out = x*cos + R(x)*sin with R(x) = [-x2, x1]; so dx = g*cos + R^T(g*sin),
        # R^T(y) = [y2, -y1].
        return grad * cos + torch.cat((g_sin[..., half:], -g_sin[..., :half]), dim=-1), None, None
