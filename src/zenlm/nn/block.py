"""A Transformer block: self-attention, optional cross-attention, MLP.

Each sub-layer has a norm and a residual, pre-norm (GPT, Llama, T5) or post-norm
(BERT, BART).
"""

from __future__ import annotations

import torch
from torch import nn

from zenlm.nn.attention import Attention
from zenlm.nn.kv_cache import KVCache
from zenlm.nn.mlp import MLP


class Block(nn.Module):
    """Residual sub-layers given by injection.

    Args:
        attn: Self-attention.
        attn_norm: Norm paired with `attn`.
        mlp: Feed-forward.
        mlp_norm: Norm paired with `mlp`.
        cross_attn: Cross-attention to an encoder's output (encoder-decoders), or None.
        cross_norm: Norm paired with `cross_attn`.
        pre_norm: Normalise each sub-layer's input (True) or the residual sum (False).
        dropout: Dropout on each sub-layer's output while training (0: none).
    """

    def __init__(
        self,
        attn: Attention,
        attn_norm: nn.Module,
        mlp: MLP,
        mlp_norm: nn.Module,
        *,
        cross_attn: Attention | None = None,
        cross_norm: nn.Module | None = None,
        pre_norm: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.attn, self.attn_norm = attn, attn_norm
        self.cross_attn, self.cross_norm = cross_attn, cross_norm
        self.mlp, self.mlp_norm = mlp, mlp_norm
        self.pre_norm = pre_norm
        self.dropout = nn.Dropout(dropout) if dropout else None

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
        cross_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        cross_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T, d_model) -> (B, T, d_model).

        `cross_kv` (keys and values (B, Hkv, S, D) of the encoder output, from
        `cross_attn.project_kv`) feeds cross-attention, masked by `cross_mask`
        (B, 1, 1, S), True at real source tokens.
        """
        x = self._residual(
            x,
            self.attn_norm,
            lambda h: self.attn(
                h, mask=mask, is_causal=is_causal, rope=rope, cache=cache, layer=layer
            ),
        )
        if self.cross_attn is not None:
            x = self._residual(
                x, self.cross_norm, lambda h: self.cross_attn(h, kv=cross_kv, mask=cross_mask)
            )
        return self._residual(x, self.mlp_norm, self.mlp)

    def _residual(self, x: torch.Tensor, norm: nn.Module, sublayer) -> torch.Tensor:  # noqa: ANN001
        if self.pre_norm:
            return x + self._drop(sublayer(norm(x)))
        return norm(x + self._drop(sublayer(x)))

    def _drop(self, h: torch.Tensor) -> torch.Tensor:
        return h if self.dropout is None else self.dropout(h)
