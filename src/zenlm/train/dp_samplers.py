"""Exact per-sample gradients of zenlm's own layers, registered with Opacus.

Opacus computes per-sample gradients in its hooks mode from each layer's input
(`activations`) and the gradient of the loss with respect to its output (`backprops`,
already scaled by the batch size for a mean loss). Its own samplers cover nn.Linear,
nn.Embedding, nn.LayerNorm and others; these add zenlm's layers that own trainable
parameters, so no layer falls back to functorch (which replays the forward and would
draw fresh dropout masks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from opacus.grad_sample.utils import register_grad_sampler
from torch import nn

from zenlm.nn.lora import LoRALinear
from zenlm.nn.norm import RMSNorm
from zenlm.nn.positions import LearnedPositions


@register_grad_sampler(LoRALinear)
def lora_grad_sample(layer: LoRALinear, activations: list[torch.Tensor],
                     backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """Per-sample grads of a LoRALinear: y = x W^T + b + s (x A^T) B^T.

    Args:
        layer: The LoRALinear (unmerged, without adapter dropout: refused earlier).
        activations: [x (n, ..., in)].
        backprops: dL/dy (n, ..., out).

    Returns:
        {param: (n, *param.shape)} for each trainable parameter of the layer.
    """
    # float32 whatever autocast ran the forward in: grad samples are summed and clipped
    x, g = activations[0].float(), backprops.float()
    out: dict[nn.Parameter, torch.Tensor] = {}
    if layer.lora_a.requires_grad or layer.lora_b.requires_grad:
        u = x @ layer.lora_a.float().t()  # (n, ..., r)
        if layer.lora_b.requires_grad:  # dL/dB = s * g^T u
            out[layer.lora_b] = torch.einsum("n...o,n...r->nor", g, u) * layer.scale
        if layer.lora_a.requires_grad:  # dL/dA = s * (g B)^T x
            out[layer.lora_a] = torch.einsum("n...r,n...i->nri", g @ layer.lora_b.float(),
                                             x) * layer.scale
    if layer.weight.requires_grad:
        out[layer.weight] = torch.einsum("n...o,n...i->noi", g, x)
    if layer.bias is not None and layer.bias.requires_grad:
        out[layer.bias] = torch.einsum("n...o->no", g)
    return out


@register_grad_sampler(LearnedPositions)
def positions_grad_sample(layer: LearnedPositions, activations: list[torch.Tensor],
                          backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """Per-sample grads of a position table: each row's backprops added at its positions.

    Args:
        layer: The LearnedPositions.
        activations: [positions (n, T) long].
        backprops: dL/d(vectors) (n, T, dim).
    """
    positions = activations[0]
    n, dim = backprops.shape[0], layer.weight.shape[1]
    grad = torch.zeros(n, *layer.weight.shape, device=backprops.device)
    index = positions.reshape(n, -1, 1).expand(n, positions[0].numel(), dim)
    grad.scatter_add_(1, index, backprops.float().reshape(n, -1, dim))
    return {layer.weight: grad}


@register_grad_sampler(RMSNorm)
def rmsnorm_grad_sample(layer: RMSNorm, activations: list[torch.Tensor],
                        backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """Per-sample grads of RMSNorm's gain: sum over positions of dL/dy * x / rms(x).

    Args:
        layer: The RMSNorm.
        activations: [x (n, ..., dim)].
        backprops: dL/dy (n, ..., dim).
    """
    x = activations[0]
    normed = F.rms_norm(x.float(), (x.shape[-1],), None, layer.eps)
    return {layer.weight: torch.einsum("n...d,n...d->nd", backprops.float(), normed)
            .to(layer.weight.dtype)}
