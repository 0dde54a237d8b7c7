"""Sequence classification: encode texts, collate, loss, predict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zenlm.tasks.batching import TensorBatch
from zenlm.tasks.collate import pad_ids, truncate_keep_last
from zenlm.tokenizer import Tokenizer


@dataclass
class ClassifyFeature:
    """One tokenized text and its label index (-1 when unlabelled)."""

    ids: list[int]
    label: int = -1


def encode_texts(
    tokenizer: Tokenizer, texts: Sequence[str], labels: Sequence[int] | None = None, *,
    max_length: int = 128, keep_last: bool = True,
) -> list[ClassifyFeature]:
    """Tokenize texts (with the model's special tokens), cut to `max_length`.

    `keep_last` keeps a final special token such as BERT's [SEP] when cutting.
    """
    rows = tokenizer.encode_batch(list(texts))
    labels = labels if labels is not None else [-1] * len(rows)
    return [ClassifyFeature(truncate_keep_last(ids, max_length, keep_last), label)
            for ids, label in zip(rows, labels, strict=True)]


def collate_classify(features: list[ClassifyFeature], pad_id: int) -> TensorBatch:
    """TensorBatch(ids (B, T), attention_mask (B, T), labels (B,))."""
    ids, mask = pad_ids([f.ids for f in features], pad_id)
    labels = torch.tensor([f.label for f in features], dtype=torch.long)
    return TensorBatch(ids=ids, attention_mask=mask, labels=labels)


def classify_loss(
    model: nn.Module, batch: TensorBatch, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of `model(ids, mask)` logits (B, C) against labels (B,)."""
    logits = model(batch.ids, batch.attention_mask)
    weight = class_weights.to(logits.device) if class_weights is not None else None
    return F.cross_entropy(logits.float(), batch.labels, weight=weight)


def class_weights_from_counts(labels: Sequence[int], n_labels: int) -> torch.Tensor:
    """Inverse-frequency weights (n_labels,), mean 1: rare classes count more in the loss."""
    counts = torch.bincount(torch.tensor(list(labels)), minlength=n_labels).float()
    weights = counts.sum() / (n_labels * counts.clamp(min=1))
    return weights


@torch.inference_mode()
def predict_classify(
    model: nn.Module, features: Sequence[ClassifyFeature], pad_id: int, batch_size: int = 64
) -> torch.Tensor:
    """Class probabilities (N, C), float32; batches sorted by length so padding is small."""
    model.eval()
    order = sorted(range(len(features)), key=lambda i: len(features[i].ids))
    out: list[torch.Tensor] = [torch.empty(0)] * len(features)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = collate_classify([features[i] for i in chunk], pad_id)
        probs = model(batch.ids, batch.attention_mask).float().softmax(-1)
        for row, index in enumerate(chunk):
            out[index] = probs[row]
    return torch.stack(out) if out else torch.zeros(0)
