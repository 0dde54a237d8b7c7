"""Extending a tokenizer and its model's embedding with characters it cannot encode.

An English WordPiece vocabulary maps most Chinese characters to [UNK]. Adding the
training set's most frequent unknown characters as tokens (with new embedding rows,
initialised at the mean embedding) lets such a model read that text; fine-tuning then
learns the new rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch import nn

from zenlm.models.build import replace_token_embedding
from zenlm.tokenizer import Tokenizer


def unknown_characters(tokenizer: Tokenizer, texts: Sequence[str], limit: int) -> list[str]:
    """The `limit` most frequent characters of `texts` that encode to the unknown token."""
    unk = tokenizer.token_to_id(tokenizer.unk_token or "[UNK]")
    counts: Counter[str] = Counter()
    for text in texts:
        encoding = tokenizer.backend.encode(text, add_special_tokens=False)
        for token, (start, end) in zip(encoding.ids, encoding.offsets, strict=True):
            if token == unk:
                counts.update(ch for ch in text[start:end] if not ch.isspace())
    return [ch for ch, _ in counts.most_common(limit)]


def extend_vocabulary(tokenizer: Tokenizer, backbone: nn.Module, tokens: Sequence[str]) -> int:
    """Add `tokens` to the tokenizer and rows to the backbone's embedding; returns the count.

    The backbone's config.vocab_size is updated, so the saved folder is consistent.
    Decoders with a separate (untied) output head are not supported.
    """
    if not tokens:
        return 0
    if getattr(backbone, "lm_head", None) is not None and not backbone.config.tie_embeddings:
        raise ValueError("extending the vocabulary of an untied decoder head is not supported")
    old = backbone.embed.weight.detach()
    tokenizer.backend.add_tokens(list(tokens))
    added = tokenizer.vocab_size - old.shape[0]
    rows = old.mean(0) + 0.02 * torch.randn(added, old.shape[1], dtype=old.dtype)
    replace_token_embedding(backbone, torch.cat([old, rows]))
    return added
