"""Bidirectional encoders (BERT, MiniLM, RoBERTa families)."""

from __future__ import annotations

import math

import torch
from torch import nn

from zenlm.config import ModelConfig
from zenlm.nn import Block
from zenlm.nn.masks import build_mask
from zenlm.nn.positions import RelativePositionBias


class EncoderModel(nn.Module):
    """Embeddings (token + position + segment, normed) -> bidirectional blocks.

    Parts are built by `zenlm.models.build_model` from a ModelConfig and passed in.
    The output is the last hidden states; task heads (zenlm.models.heads) read them.

    Args:
        config: The configuration the parts were built from.
        embed: Token embedding (V, d_model).
        blocks: The Transformer blocks, in order.
        positions: Absolute positions (learned or sinusoidal), or None.
        token_types: Segment embedding (type_vocab_size, d_model), or None.
        embed_norm: Norm over the summed embeddings, or None.
        final_norm: Norm after the last block (pre-norm encoders), or None.
        relative_bias: T5's position bias shared by every block, or None.
    """

    def __init__(
        self,
        config: ModelConfig,
        *,
        embed: nn.Embedding,
        blocks: list[Block],
        positions: nn.Module | None = None,
        token_types: nn.Embedding | None = None,
        embed_norm: nn.Module | None = None,
        final_norm: nn.Module | None = None,
        relative_bias: RelativePositionBias | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.embed = embed
        self.positions = positions
        self.token_types = token_types
        self.embed_norm = embed_norm
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = final_norm
        self.relative_bias = relative_bias

    def forward(
        self,
        ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Contextual hidden states of every token.

        Args:
            ids: Token ids (B, T).
            attention_mask: (B, T), 1 for real tokens and 0 for padding; None if unpadded.
            token_type_ids: Segment ids (B, T) (0 for the first text, 1 for the second).

        Returns:
            Hidden states (B, T, d_model). Rows' padding positions hold arbitrary values.
        """
        if ids.ndim != 2:
            raise ValueError(f"ids must be (batch, length), got shape {tuple(ids.shape)}")
        if attention_mask is not None and attention_mask.shape != ids.shape:
            raise ValueError(
                f"attention_mask must have the shape of ids {tuple(ids.shape)}, "
                f"got {tuple(attention_mask.shape)}"
            )
        x = self.embed(ids)  # (B, T, d)
        if self.config.scale_embeddings:
            x = x * math.sqrt(self.config.d_model)
        positions = self.position_ids(ids, attention_mask)
        if self.positions is not None:
            x = x + self.positions(positions).to(x.dtype)
        if self.token_types is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(ids)
            x = x + self.token_types(token_type_ids)
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        bias = None
        if self.relative_bias is not None:
            bias = self.relative_bias(positions, positions).to(x.dtype)  # (B, H, T, T)
        mask, _ = build_mask(query_len=ids.shape[1], key_len=ids.shape[1], causal=False,
                             padding=attention_mask, bias=bias)
        for block in self.blocks:
            x = block(x, mask=mask)
        return self.final_norm(x) if self.final_norm is not None else x

    def position_ids(self, ids: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        """(B, T): count of real tokens before each token, plus `config.position_offset`.

        Counting real tokens (not slots) makes a row's output independent of how it is
        padded; for right padding it equals BERT's slot index.
        """
        B, T = ids.shape
        if padding is None:
            counts = torch.arange(T, device=ids.device).expand(B, T)
        else:
            counts = (padding.long().cumsum(-1) - 1).clamp(min=0)
        return counts + self.config.position_offset

