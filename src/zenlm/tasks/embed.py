"""Sentence embeddings: pooled last hidden states, L2-normalised (sentence-transformers' recipe)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from zenlm.models.heads import backbone_states, default_pooling, pool
from zenlm.tasks.collate import pad_ids, truncate_keep_last
from zenlm.tokenizer import Tokenizer


@torch.inference_mode()
def embed_texts(
    model: nn.Module, tokenizer: Tokenizer, texts: Sequence[str], *, batch_size: int = 32,
    normalize: bool = True,
) -> torch.Tensor:
    """Embeddings (N, d_model) float32 of `texts`.

    Each text's last hidden states are pooled (mean over real tokens for encoders, the
    last token for decoders) and, with `normalize`, scaled to unit L2 norm. Texts longer
    than the model's positions are cut, keeping the final special token.
    """
    if isinstance(texts, str):
        raise ValueError("embed takes a list of texts; wrap a single text in a list")
    config = model.config
    limit = config.max_seq_len - config.position_offset
    encoder = config.arch == "encoder"
    pad = tokenizer.pad_token_id
    pad = pad if pad is not None else (config.pad_token_id or 0)
    vectors = []
    for start in range(0, len(texts), batch_size):
        rows = [truncate_keep_last(tokenizer.encode(t), limit, encoder)
                for t in texts[start:start + batch_size]]
        ids, mask = pad_ids(rows, pad)
        hidden = backbone_states(model, ids, mask)  # (B, T, d)
        vectors.append(pool(hidden.float(), mask, default_pooling(config)))
    out = torch.cat(vectors) if vectors else torch.zeros(0, config.d_model)
    return torch.nn.functional.normalize(out, dim=-1) if normalize else out
