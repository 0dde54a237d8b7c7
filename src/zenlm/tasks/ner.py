"""Token classification (NER): word tags <-> sub-word labels, collate, loss, decode; `SPEC`."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from zenlm.data import tasks as readers
from zenlm.eval import breakdown, metrics
from zenlm.eval.report import Report
from zenlm.models.heads import TokenClassifier
from zenlm.tasks.batching import TensorBatch
from zenlm.tasks.collate import pad_ids, pad_labels
from zenlm.tasks.spec import Objective, TaskInfo, TaskSpec, text_input
from zenlm.tokenizer import Tokenizer

IGNORE = -100


@dataclass
class TokenFeature:
    """A tokenized piece of a sentence: ids, label per token, and each word's first token.

    Attributes:
        ids: Token ids, special tokens included.
        labels: Tag index on each word's first sub-word token, IGNORE elsewhere.
        word_starts: Token index of the first sub-word of each word of the piece.
        sentence: Index of the sentence the piece belongs to.
        first_word: Index (in the sentence) of the piece's first word.
    """

    ids: list[int]
    labels: list[int]
    word_starts: list[int]
    sentence: int = 0
    first_word: int = 0


def encode_words(
    tokenizer: Tokenizer, sentences: Sequence[Sequence[str]],
    tags: Sequence[Sequence[int]] | None = None, *, max_length: int = 256,
) -> list[TokenFeature]:
    """Tokenize pre-split words; label each word's first sub-word (HF's convention).

    A sentence longer than `max_length` tokens is split into pieces at word boundaries,
    so every word gets a prediction (nothing is cut off).
    """
    features = []
    for index, words in enumerate(sentences):
        word_tags = tags[index] if tags is not None else [IGNORE] * len(words)
        features += _encode_piece(tokenizer, list(words), list(word_tags), index, 0, max_length)
    return features


def _encode_piece(
    tokenizer: Tokenizer, words: list[str], tags: list[int], sentence: int, offset: int,
    max_length: int,
) -> list[TokenFeature]:
    encoding = tokenizer.backend.encode(words, is_pretokenized=True)
    if len(encoding.ids) > max_length and len(words) > 1:
        half = len(words) // 2
        return (_encode_piece(tokenizer, words[:half], tags[:half], sentence, offset, max_length)
                + _encode_piece(tokenizer, words[half:], tags[half:], sentence, offset + half,
                                max_length))
    if len(encoding.ids) > max_length:
        raise ValueError(f"sentence {sentence}: word {words[0][:40]!r} alone is longer than "
                         f"max_length={max_length} tokens")
    labels, starts, previous = [], [], None
    for position, word in enumerate(encoding.word_ids):
        first = word is not None and word != previous
        labels.append(tags[word] if first else IGNORE)
        if first:
            starts.append(position)
        previous = word
    if len(starts) != len(words):  # a word the tokenizer dropped entirely (e.g. a control char)
        raise ValueError(f"sentence {sentence}: {len(words)} words but {len(starts)} were "
                         f"tokenized; words: {words[:8]}")
    return [TokenFeature(encoding.ids, labels, starts, sentence, offset)]


def collate_tokens(features: list[TokenFeature], pad_id: int) -> TensorBatch:
    """TensorBatch(ids (B, T), attention_mask (B, T), labels (B, T) with IGNORE padding)."""
    ids, mask = pad_ids([f.ids for f in features], pad_id)
    return TensorBatch(ids=ids, attention_mask=mask,
                       labels=pad_labels([f.labels for f in features], ids.shape[1], IGNORE))


def token_loss(model: nn.Module, batch: TensorBatch,
               class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over labelled tokens of `model(ids, mask)` logits (B, T, C)."""
    logits = model(batch.ids, batch.attention_mask)
    weight = class_weights.to(logits.device) if class_weights is not None else None
    return F.cross_entropy(logits.flatten(0, 1).float(), batch.labels.flatten(),
                           weight=weight, ignore_index=IGNORE)


def token_loss_per_example(model: nn.Module, batch: TensorBatch) -> torch.Tensor:
    """Each sentence's mean token cross-entropy (B,) (the DP-SGD objective).

    A sentence's gradient then depends on it alone (`token_loss` divides by the batch's
    token count, which couples the sentences of a batch).
    """
    logits = model(batch.ids, batch.attention_mask)  # (B, T, C)
    losses = F.cross_entropy(logits.float().transpose(1, 2), batch.labels,
                             ignore_index=IGNORE, reduction="none")  # (B, T)
    counts = (batch.labels != IGNORE).sum(1).clamp(min=1)  # (B,)
    return losses.sum(1) / counts


def predict_tags(
    model: nn.Module, features: Sequence[TokenFeature], n_sentences: int, pad_id: int,
    batch_size: int = 64,
) -> list[list[int]]:
    """Tag index of every word of every sentence (pieces joined back)."""
    return [row.argmax(-1).tolist()
            for row in word_logits(model, features, n_sentences, pad_id, batch_size)]


@torch.inference_mode()
def word_logits(
    model: nn.Module, features: Sequence[TokenFeature], n_sentences: int, pad_id: int,
    batch_size: int = 64,
) -> list[torch.Tensor]:
    """Tag logits (words, C), float32, of every sentence: each word's first sub-word's."""
    model.eval()
    words: list[dict[int, torch.Tensor]] = [{} for _ in range(n_sentences)]
    width = 0  # C, known after the first batch
    for start in range(0, len(features), batch_size):
        chunk = list(features[start:start + batch_size])
        batch = collate_tokens(chunk, pad_id)
        logits = model(batch.ids, batch.attention_mask).float()  # (B, T, C)
        width = logits.shape[-1]
        for row, feature in enumerate(chunk):
            for k, position in enumerate(feature.word_starts):
                words[feature.sentence][feature.first_word + k] = logits[row, position]
    return [torch.stack([tags[i] for i in range(len(tags))]) if tags
            else torch.zeros(0, width) for tags in words]


class NERTask(TaskSpec[readers.TaggedSentence, TokenFeature]):
    """One BIO tag per word: CoNLL in, a linear head per token, entity F1 first."""

    name = "ner"
    headline = "f1"
    # From benchmarks/finetune_sweep.py conll (docs/benchmarks.md, "Fine-tuning defaults
    # from the sweep"): all-MiniLM-L6-v2, CoNLL-2003 valid.txt entity F1 by epochs at lr
    # 1e-4, 1 / 1.5 / 2 / 2.5: 86.7 / 88.8 / 89.1 / 90.1; lr 2e-4 with 2.5 epochs: 91.1
    # (17 minutes at one thread on a Zen 4 shared with another job).
    defaults: ClassVar[dict[str, Any]] = {
        "lr": 2e-4, "epochs": 2.5, "batch_size": 32, "max_length": 128,
        "freeze_embeddings": True, "eval_every": 220, "patience": 3,
    }
    weighted = True

    def read(self, path: str | Path, labels: Sequence[str] | None = None, *,
             labelled: bool = True) -> list[readers.TaggedSentence]:
        """Sentences of a CoNLL file (the last column is the tag)."""
        return readers.read_conll(path, labels=labels, require_tags=labelled)

    def label_set(self, examples: list[readers.TaggedSentence]) -> list[str]:
        """"O" first, then the other tags sorted."""
        tags = {t for e in examples for t in e.tags}
        return ["O", *sorted(tags - {"O"})]

    def check_labels(self, labels: Sequence[str],
                     examples: list[readers.TaggedSentence]) -> None:
        """Refuse validation tags that training never saw."""
        for e in examples:
            unknown = set(e.tags) - set(labels)
            if unknown:
                raise readers.TaskDataError(f"line {e.line}: validation tags {sorted(unknown)} "
                                            f"never occur in training ({list(labels)})")

    def text_of(self, example: readers.TaggedSentence) -> str:
        """The words joined by spaces."""
        return " ".join(example.tokens)

    def encode(self, tokenizer: Any, examples: list[readers.TaggedSentence], info: TaskInfo,
               *, labelled: bool = True) -> list[TokenFeature]:
        """Sub-word pieces of every sentence, tags on each word's first token."""
        index = {tag: i for i, tag in enumerate(info.labels)}
        tags = [[index[t] for t in e.tags] for e in examples] if labelled else None
        return encode_words(tokenizer, [e.tokens for e in examples], tags,
                            max_length=info.max_length)

    def collate(self, features: list[TokenFeature], pad_id: int) -> TensorBatch:
        """See `collate_tokens`."""
        return collate_tokens(features, pad_id)

    def class_labels(self, features: list[TokenFeature]) -> list[int]:
        """The tag index of every labelled token."""
        return [t for f in features for t in f.labels if t != IGNORE]

    def objective(self, class_weights: torch.Tensor | None = None, *,
                  info: TaskInfo | None = None) -> Objective:
        """Cross-entropy over labelled tokens."""
        return functools.partial(token_loss, class_weights=class_weights)

    def private_objective(self, info: TaskInfo | None = None) -> Objective:
        """Each sentence's mean token loss (B,)."""
        return token_loss_per_example

    def build_model(self, info: TaskInfo, backbone: nn.Module) -> TokenClassifier:
        """A linear head on every token, one output per tag."""
        return TokenClassifier(backbone, len(info.labels), dropout=info.dropout)

    def evaluate(self, model: nn.Module, tokenizer: Any, info: TaskInfo,
                 examples: list[readers.TaggedSentence], pad_id: int) -> dict[str, Any]:
        """Entity-level (seqeval-style) precision, recall and F1, per type too."""
        features = self.encode(tokenizer, examples, info)
        tags = predict_tags(model, features, len(examples), pad_id)
        predicted = [[info.labels[t] for t in row] for row in tags]
        return {**metrics.entity_f1([e.tags for e in examples], predicted), "n": len(examples)}

    def report(self, model: nn.Module, tokenizer: Any, info: TaskInfo,
               examples: list[readers.TaggedSentence], pad_id: int, *, bins: int) -> Report:
        """Entity P/R/F1 (per type too), and per word: tag confusion matrix, calibration."""
        features = self.encode(tokenizer, examples, info)
        probs = torch.cat(word_logits(model, features, len(examples), pad_id)).softmax(-1)
        truth = [t for e in examples for t in e.tags]
        words = breakdown.labelled_predictions(truth, probs, info.labels, bins, item="word",
                                               matrix_name="tag_confusion_matrix")
        tags = iter([info.labels[i] for i in probs.argmax(-1).tolist()])
        predicted = [[next(tags) for _ in e.tags] for e in examples]
        entities = metrics.entity_f1([e.tags for e in examples], predicted)
        numbers = {**entities, "n": len(examples), "words": len(truth),
                   "tag_accuracy": words.metrics["accuracy"], "ece": words.metrics["ece"],
                   "mce": words.metrics["mce"], "brier": words.metrics["brier"],
                   "tags": info.labels, "tag_confusion_matrix": words.metrics["confusion_matrix"],
                   "per_tag": words.metrics["per_class"],
                   "calibration": words.metrics["calibration"]}
        tables = [breakdown.per_label_table(entities["per_type"], "type", "Per entity type")]
        tables += [dataclasses.replace(t, title=f"Per word: {t.title.lower()}")
                   for t in words.tables if t.title in ("Confusion matrix", "Calibration")]
        return Report(self.name, numbers, tables=tables, figures=words.figures)

    def example_from(self, value: Any) -> readers.TaggedSentence:
        """Words (a list of str), or a text (str) split at whitespace."""
        if isinstance(value, list) and value and all(isinstance(w, str) for w in value):
            return readers.TaggedSentence(tokens=list(value), tags=[], line=0)
        words = text_input(value, self.name, "a text (str) or a list of words").split()
        return readers.TaggedSentence(tokens=words, tags=[], line=0)

    def predict_examples(self, model: nn.Module, tokenizer: Any, info: TaskInfo,
                         examples: list[readers.TaggedSentence], pad_id: int, *,
                         max_new_tokens: int = 256) -> Iterator[dict[str, Any]]:
        """{"tokens", "tags"} per sentence."""
        features = self.encode(tokenizer, examples, info, labelled=False)
        for example, tags in zip(examples, predict_tags(model, features, len(examples), pad_id),
                                 strict=True):
            yield {"tokens": example.tokens, "tags": [info.labels[t] for t in tags]}


SPEC = NERTask()
