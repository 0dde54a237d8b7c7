"""Encoder-decoder models (T5, BART, Marian and the 2017 Transformer).

An encoder-decoder is an `EncoderModel` and a `DecoderLM` whose blocks also attend
to the encoder's output. The decoder reads that output as a `CrossContext`: every
layer's keys and values, projected once per source. Generation puts it in the KV
cache (`cache.cross`), so the generation core drives this model exactly as it drives
a decoder-only one: `hidden_states`, `lm_head`, `step` and `new_cache` are the
decoder's.
"""

from __future__ import annotations

import torch
from torch import nn

from zenlm.config import ModelConfig
from zenlm.models.decoder import DecoderLM
from zenlm.models.encoder import EncoderModel
from zenlm.nn import KVCache
from zenlm.nn.kv_cache import CrossContext


class Seq2SeqLM(nn.Module):
    """Source ids -> encoder -> cross-attending decoder -> target logits.

    Parts are built by `zenlm.models.build_model` from a ModelConfig with
    arch="encoder-decoder" and passed in. With `config.share_embeddings` the encoder
    and the decoder hold the same embedding module (and a tied head its weight).

    Args:
        config: The configuration the parts were built from.
        encoder: The bidirectional encoder.
        decoder: The decoder, its blocks with cross-attention.
    """

    def __init__(self, config: ModelConfig, *, encoder: EncoderModel, decoder: DecoderLM) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.decoder = decoder

    # ---------------------------------------------------------------- training
    def forward(
        self,
        src_ids: torch.Tensor,
        tgt_ids: torch.Tensor,
        *,
        src_mask: torch.Tensor | None = None,
        tgt_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced logits of every target position.

        Args:
            src_ids: Source token ids (B, S).
            tgt_ids: Decoder inputs (B, T): the start token then the target shifted right.
            src_mask: (B, S), 1 at real source tokens and 0 at padding; None if unpadded.
            tgt_mask: (B, T), likewise for the decoder inputs (right padding).

        Returns:
            Logits (B, T, V).
        """
        cross = self.cross_context(self.encode(src_ids, src_mask), src_mask)
        return self.decoder(tgt_ids, attention_mask=tgt_mask, cross=cross)

    # -------------------------------------------------------------- generation
    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder hidden states (B, S, d_model) of source ids (B, S)."""
        return self.encoder(src_ids, attention_mask=src_mask)

    def cross_context(
        self, memory: torch.Tensor, src_mask: torch.Tensor | None = None, *, cached: bool = True,
    ) -> CrossContext:
        """Every decoder layer's cross-attention keys and values of `memory` (B, S, d).

        With `cached=False` they are projected again at every step (see CrossContext).
        """
        return self.decoder.cross_context(memory, src_mask, cached=cached)

    def start_cache(
        self, src_ids: torch.Tensor, src_mask: torch.Tensor | None, max_len: int,
        *, cached: bool = True,
    ) -> KVCache:
        """A decoder KV cache for `max_len` target tokens, carrying the sources' context.

        Args:
            src_ids: Source token ids (B, S).
            src_mask: (B, S) 1 at real tokens, or None.
            max_len: Target slots per row (the start token included).
            cached: Project the cross-attention keys and values once (True) or per step.
        """
        cache = self.new_cache(src_ids.shape[0], max_len)
        cache.cross = self.cross_context(self.encode(src_ids, src_mask), src_mask, cached=cached)
        return cache

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        """An empty decoder cache (set `cache.cross` before decoding)."""
        return self.decoder.new_cache(batch, max_len)

    def hidden_states(self, ids: torch.Tensor, **kwargs: object) -> torch.Tensor:
        """The decoder's final hidden states (B, T, d_model) (see `DecoderLM.hidden_states`)."""
        return self.decoder.hidden_states(ids, **kwargs)

    def step(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One decode step: logits (B, T, V) of target tokens ids (B, T) after `cache`."""
        return self.decoder.step(ids, cache)

    @property
    def lm_head(self) -> nn.Linear:
        """The vocabulary projection (the decoder's)."""
        return self.decoder.lm_head

    @property
    def embed(self) -> nn.Embedding:
        """The source token embedding (the target's too when shared)."""
        return self.encoder.embed

    @property
    def start_id(self) -> int:
        """The decoder's first input (config.decoder_start_token_id, else pad, else 0)."""
        config = self.config
        for value in (config.decoder_start_token_id, config.pad_token_id):
            if value is not None:
                return value
        return 0
