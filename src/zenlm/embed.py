"""Sentence embeddings: pooled last hidden states, L2-normalised (sentence-transformers' recipe).

It sits beside `zenlm.api` (whose `LM.embed` calls it), below the task layer, so that
the Python API never imports `zenlm.tasks`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from zenlm.models.heads import backbone_states, default_pooling, pool
from zenlm.tokenizer import Tokenizer


@torch.inference_mode()
def embed_texts(
    model: nn.Module, tokenizer: Tokenizer, texts: Sequence[str], *, batch_size: int = 32,
    normalize: bool = True,
) -> torch.Tensor:
    """Embeddings (N, d_model) float32 of `texts`.

    Each text's last hidden states are pooled (mean over real tokens for encoders, the
    last token for decoders) and, with `normalize`, scaled to unit L2 norm. Texts longer
    than the model's positions are cut, keeping an encoder's final special token.
    """
    if isinstance(texts, str):
        raise ValueError("embed takes a list of texts; wrap a single text in a list")
    config = model.config
    limit = config.context_length
    keep_last = config.arch == "encoder"  # its final [SEP]/</s>
    pad = tokenizer.pad_token_id
    pad = pad if pad is not None else (config.pad_token_id or 0)
    vectors = []
    for start in range(0, len(texts), batch_size):
        rows = [_truncate(tokenizer.encode(t), limit, keep_last)
                for t in texts[start:start + batch_size]]
        ids, mask = _pad(rows, pad)
        hidden = backbone_states(model, ids, mask)  # (B, T, d)
        vectors.append(pool(hidden.float(), mask, default_pooling(config)))
    out = torch.cat(vectors) if vectors else torch.zeros(0, config.d_model)
    return torch.nn.functional.normalize(out, dim=-1) if normalize else out


def _truncate(ids: list[int], limit: int, keep_last: bool) -> list[int]:
    if len(ids) <= limit:
        return ids
    return ids[: limit - 1] + ids[-1:] if keep_last else ids[:limit]


def _pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, T) and attention mask (B, T), 1 on real tokens."""
    ids = pad_sequence([torch.tensor(r, dtype=torch.long) for r in rows], batch_first=True,
                       padding_value=pad)
    lengths = torch.tensor([len(r) for r in rows])
    mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long()
    return ids, mask
