"""Decoder-only language models (GPT-2, Llama, Mistral, Qwen2 families)."""

from __future__ import annotations

import torch
from torch import nn

from zenlm.config import ModelConfig
from zenlm.nn import Block, KVCache, RotaryEmbedding, attention_mask


class DecoderLM(nn.Module):
    """Token embedding -> causal blocks -> final norm -> vocabulary logits.

    Parts are built by `zenlm.models.build_model` from a ModelConfig and passed in.

    Args:
        config: The configuration the parts were built from.
        embed: Token embedding (V, d_model).
        blocks: The Transformer blocks, in order.
        final_norm: Norm before the output head.
        lm_head: Linear d_model -> V (shares `embed.weight` when tied).
        positions: Learned absolute positions (GPT-2), or None.
        rope: Rotary embedding (Llama family), or None.
    """

    def __init__(
        self,
        config: ModelConfig,
        *,
        embed: nn.Embedding,
        blocks: list[Block],
        final_norm: nn.Module,
        lm_head: nn.Linear,
        positions: nn.Module | None = None,
        rope: RotaryEmbedding | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.embed = embed
        self.positions = positions
        self.rope = rope
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = final_norm
        self.lm_head = lm_head
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        """A KV cache sized for this model, in its parameters' dtype."""
        weight = self.embed.weight
        return KVCache(
            self.config.n_layers, batch, max_len, self.config.kv_heads,
            self.config.dim_per_head, dtype=weight.dtype, device=weight.device,
        )

    def forward(
        self,
        ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Next-token logits for every position.

        Args:
            ids: Token ids (B, T).
            attention_mask: (B, S) with 1 for real tokens and 0 for padding, over every
                cache slot including this call's T tokens (S = cache.length + T); None
                when nothing is padded.
            position_ids: (B, T); by default counted from the first real token of each row.
            cache: KV cache to read earlier tokens from and append these to.

        Returns:
            Logits (B, T, V) in the parameters' dtype.
        """
        return self.lm_head(self.hidden_states(
            ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache
        ))

    def hidden_states(
        self,
        ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Final-norm hidden states (B, T, d_model); arguments as in `forward`."""
        B, T = ids.shape
        start = cache.length if cache is not None else 0
        self._check_lengths(ids, start, attention_mask)
        if position_ids is None:
            position_ids = _default_positions(B, T, start, attention_mask, ids.device)
        x = self.embed(ids)  # (B, T, d)
        if self.positions is not None:
            x = x + self.positions(position_ids)
        rope = self.rope(position_ids, x.dtype) if self.rope is not None else None
        mask = attention_mask_for(self.config, attention_mask, T, start + T)
        # SDPA's is_causal aligns the mask top-left, right only when nothing is cached.
        is_causal = start == 0
        for index, block in enumerate(self.blocks):
            x = block(x, mask=mask, is_causal=is_causal, rope=rope, cache=cache, layer=index)
        if cache is not None:
            cache.advance(T)
        return self.final_norm(x)

    def _check_lengths(
        self, ids: torch.Tensor, start: int, attention_mask: torch.Tensor | None
    ) -> None:
        if ids.ndim != 2:
            raise ValueError(f"ids must be (batch, length), got shape {tuple(ids.shape)}")
        expected = (ids.shape[0], start + ids.shape[1])
        if attention_mask is not None and tuple(attention_mask.shape) != expected:
            raise ValueError(
                f"attention_mask must be (batch, cached + new) = {expected}, "
                f"got {tuple(attention_mask.shape)}"
            )


def attention_mask_for(
    config: ModelConfig, padding: torch.Tensor | None, query_len: int, key_len: int
) -> torch.Tensor | None:
    """The causal (and sliding-window, and padding) mask of a decoder step.

    Returns None when SDPA's own `is_causal` suffices: no padding, no window, and
    either a fresh prompt (T == S) or a single new token that may see every slot.
    """
    window = config.sliding_window
    if window is not None and key_len <= window:
        window = None  # every key is inside the window
    if padding is None and window is None and (query_len == key_len or query_len == 1):
        return None
    return attention_mask(
        padding, query_len=query_len, key_len=key_len, causal=True, sliding_window=window
    )


def _default_positions(
    batch: int, length: int, start: int, padding: torch.Tensor | None, device: torch.device
) -> torch.Tensor:
    """Position ids (B, T): slot index, or with padding the count of real tokens before."""
    if padding is None:
        return torch.arange(start, start + length, device=device).expand(batch, length)
    positions = padding.long().cumsum(-1) - 1  # (B, S)
    return positions.clamp(min=0)[:, start:start + length]
