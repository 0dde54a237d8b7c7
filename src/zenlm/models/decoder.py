"""Decoders: decoder-only LMs (GPT-2, Llama, Mistral, Qwen2) and encoder-decoders' halves.

The decoder of an encoder-decoder (T5, BART, Marian) has blocks that also cross-attend.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from zenlm.config import ModelConfig
from zenlm.nn import Block, KVCache, RotaryEmbedding
from zenlm.nn.kv_cache import CrossContext
from zenlm.nn.masks import build_mask, source_mask
from zenlm.nn.positions import RelativePositionBias


class DecoderLM(nn.Module):
    """Token embedding -> causal blocks -> final norm -> vocabulary logits.

    Parts are built by `zenlm.models.build_model` from a ModelConfig and passed in.
    In an encoder-decoder the blocks also attend to the source, whose keys and values
    (a `CrossContext`) come with the call or ride in the KV cache (`cache.cross`).

    Args:
        config: The configuration the parts were built from.
        embed: Token embedding (V, d_model).
        blocks: The Transformer blocks, in order.
        final_norm: Norm before the output head, or None (BART's post-norm decoder).
        lm_head: Linear d_model -> V (shares `embed.weight` when tied).
        positions: Absolute positions added to the embeddings (learned as GPT-2's, or
            sinusoidal), or None.
        rope: Rotary embedding (Llama family), or None.
        embed_norm: Norm over the summed embeddings (BART), or None.
        relative_bias: T5's position bias shared by every block, or None.
    """

    def __init__(
        self,
        config: ModelConfig,
        *,
        embed: nn.Embedding,
        blocks: list[Block],
        final_norm: nn.Module | None,
        lm_head: nn.Linear,
        positions: nn.Module | None = None,
        rope: RotaryEmbedding | None = None,
        embed_norm: nn.Module | None = None,
        relative_bias: RelativePositionBias | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.embed = embed
        self.positions = positions
        self.rope = rope
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = final_norm
        self.embed_norm = embed_norm
        self.relative_bias = relative_bias
        self.lm_head = lm_head
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.step_fn = None  # a compiled decode step (zenlm.generate.compile), if any

    def step(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One decode step: logits (B, T, V) of new tokens ids (B, T) appended to `cache`."""
        if self.step_fn is not None:
            return self.step_fn(ids, cache)
        return self(ids, cache=cache)

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        """A KV cache sized for this model, in its activations' dtype.

        On CPU in 16-bit floats, decode steps read keys in multiples of 64 slots:
        oneDNN compiles a matmul per shape, so each new key length costs memory
        (see `KVCache`).
        """
        # a norm is in the activation dtype, whatever the weights' format
        norm = (self.final_norm or self.blocks[0].attn_norm).weight
        half = norm.device.type == "cpu" and norm.dtype in (torch.bfloat16, torch.float16)
        return KVCache(
            len(self.blocks), batch, max_len, self.config.kv_heads,
            self.config.dim_per_head, dtype=norm.dtype, device=norm.device,
            key_multiple=64 if half else 1,
        )

    def forward(
        self,
        ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        cross: CrossContext | None = None,
    ) -> torch.Tensor:
        """Next-token logits for every position.

        Args:
            ids: Token ids (B, T).
            attention_mask: (B, S) with 1 for real tokens and 0 for padding, over every
                cache slot including this call's T tokens (S = cache.length + T); None
                when nothing is padded.
            position_ids: (B, T); by default counted from the first real token of each row.
            cache: KV cache to read earlier tokens from and append these to.
            cross: The source's keys and values (encoder-decoders; default `cache.cross`).

        Returns:
            Logits (B, T, V) in the parameters' dtype.
        """
        return self.lm_head(self.hidden_states(
            ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
            cross=cross,
        ))

    def hidden_states(
        self,
        ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        cross: CrossContext | None = None,
    ) -> torch.Tensor:
        """Final hidden states (B, T, d_model), what the head reads; arguments as in `forward`."""
        T = ids.shape[1]
        self._check_inputs(ids, cache, attention_mask)
        if cross is None and cache is not None:
            cross = cache.cross
        if position_ids is None:
            position_ids = default_positions(ids, cache, attention_mask)
        x = self.embed_inputs(ids, position_ids)  # (B, T, d)
        rope = self.rope(position_ids, x.dtype) if self.rope is not None else None
        mask, is_causal = self._mask(position_ids, cache, attention_mask, x.dtype)
        for index, block in enumerate(self.blocks):
            cross_kv = None if cross is None else cross.layer(index, block.cross_attn)
            x = block(x, mask=mask, is_causal=is_causal, rope=rope, cache=cache, layer=index,
                      cross_kv=cross_kv, cross_mask=None if cross is None else cross.mask)
        if cache is not None:
            cache.advance(T)
        return self.head_input(x)

    def embed_inputs(self, ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """The first block's input (B, T, d_model) of ids (B, T) at position_ids (B, T).

        Token embeddings (scaled where the family scales them), absolute positions, and
        the embedding norm (BART).
        """
        x = self.embed(ids)  # (B, T, d)
        if self.config.scale_embeddings:
            x = x * math.sqrt(self.config.d_model)
        if self.positions is not None:
            x = x + self.positions(position_ids + self.config.position_offset).to(x.dtype)
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        return x

    def head_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the head reads (B, T, d_model) from the last block's output `x`."""
        if self.final_norm is not None:
            x = self.final_norm(x)
        if self.config.scale_output:  # T5: a tied head reads d_model^-0.5 x the hidden state
            x = x * self.config.d_model**-0.5
        return x

    def cross_context(
        self, memory: torch.Tensor, padding: torch.Tensor | None = None, *, cached: bool = True,
    ) -> CrossContext:
        """Every block's cross-attention keys and values of an encoder output.

        Args:
            memory: Encoder hidden states (B, S, d_model).
            padding: (B, S), 1 at real source tokens and 0 at padding; None if unpadded.
            cached: Project the keys and values now (True) or at every step (False).
        """
        mask = source_mask(padding)
        if not cached:
            return CrossContext([], [], mask, memory)
        pairs = [block.cross_attn.project_kv(memory) for block in self.blocks]
        return CrossContext([k for k, _ in pairs], [v for _, v in pairs], mask)

    def _mask(
        self, position_ids: torch.Tensor, cache: KVCache | None, padding: torch.Tensor | None,
        dtype: torch.dtype,
    ) -> tuple[torch.Tensor | None, bool]:
        """This step's attention mask and whether the kernel applies causality (`build_mask`).

        Queries start at each row's cache length; the keys are the cache's slots read
        (`key_length`: slots past a row's own end are hidden as future ones). T5's
        relative position bias, when the model has one, is the mask.
        """
        T = position_ids.shape[1]
        key_len = T if cache is None else cache.key_length(T)
        first = 0 if cache is None else cache.uniform
        if first is None:  # rows of different lengths
            first = cache.lengths
        bias = None
        if self.relative_bias is not None:
            keys = torch.arange(key_len, device=position_ids.device)[None]  # (1, S)
            bias = self.relative_bias(position_ids, keys).to(dtype)  # (B, H, T, S)
        return build_mask(query_len=T, key_len=key_len, causal=True, first_query=first,
                          padding=padding, sliding_window=self.config.sliding_window, bias=bias)

    def _check_inputs(
        self, ids: torch.Tensor, cache: KVCache | None, attention_mask: torch.Tensor | None
    ) -> None:
        if ids.ndim != 2:
            raise ValueError(f"ids must be (batch, length), got shape {tuple(ids.shape)}")
        if attention_mask is None:
            return
        cached = 0 if cache is None else cache.longest
        expected = (ids.shape[0], cached + ids.shape[1])
        if tuple(attention_mask.shape) != expected:
            raise ValueError(
                f"attention_mask must be (batch, cached + new) = {expected}, "
                f"got {tuple(attention_mask.shape)}"
            )


def default_positions(
    ids: torch.Tensor, cache: KVCache | None, padding: torch.Tensor | None
) -> torch.Tensor:
    """Position ids (B, T) of new tokens.

    Each row counts from its own cache length; with a padding mask (left padding),
    a token's position is the number of real tokens before it.
    """
    B, T = ids.shape
    steps = torch.arange(T, device=ids.device)
    if padding is not None:
        start = 0 if cache is None else cache.longest
        positions = padding.long().cumsum(-1) - 1  # (B, S)
        return positions.clamp(min=0)[:, start:start + T]
    if cache is None:
        return steps.expand(B, T)
    if cache.uniform is not None:
        return (steps + cache.uniform).expand(B, T)
    return cache.lengths[:, None] + steps  # (B, T)
