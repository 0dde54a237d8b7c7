"""Sequence classification: encode texts, collate, loss, predict; `SPEC`, the classify task."""

from __future__ import annotations

import functools
import json
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
from zenlm.models.heads import SequenceClassifier
from zenlm.tasks.batching import TensorBatch
from zenlm.tasks.collate import pad_ids, truncate_keep_last
from zenlm.tasks.spec import Objective, TaskInfo, TaskSpec, text_input
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


def classify_losses(model: nn.Module, batch: TensorBatch) -> torch.Tensor:
    """Each row's cross-entropy (B,) of `model(ids, mask)` logits (the DP-SGD objective)."""
    logits = model(batch.ids, batch.attention_mask)
    return F.cross_entropy(logits.float(), batch.labels, reduction="none")


def class_weights_from_counts(labels: Sequence[int], n_labels: int) -> torch.Tensor:
    """Inverse-frequency weights (n_labels,), mean 1: rare classes count more in the loss."""
    counts = torch.bincount(torch.tensor(list(labels)), minlength=n_labels).float()
    weights = counts.sum() / (n_labels * counts.clamp(min=1))
    return weights


def read_label_prompts(value: str, labels: Sequence[str]) -> dict[str, str]:
    """`--label-prompts`: a JSON object {label: text}, inline or in a .json file.

    Raises:
        ValueError: not a JSON object of non-empty texts, or its labels are not exactly
            `labels` (each missing or unknown label is named, with the valid ones).
    """
    text = value if value.lstrip().startswith("{") else _read_prompt_file(value)
    try:
        prompts = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--label-prompts {value!r} is not a JSON object ({exc}); give "
                         '{"label": "a text for it", ...} or a .json file holding one') from exc
    if not isinstance(prompts, dict) or not all(
            isinstance(t, str) and t.strip() for t in prompts.values()):
        raise ValueError(f"--label-prompts {value!r} must map each label to a non-empty text")
    missing = [label for label in labels if label not in prompts]
    unknown = [label for label in prompts if label not in labels]
    if missing or unknown:
        raise ValueError(f"--label-prompts must give one text per label {list(labels)}: "
                         f"missing {missing}, unknown {unknown}")
    return {label: prompts[label] for label in labels}


def _read_prompt_file(path: str) -> str:
    if not Path(path).is_file():
        raise ValueError(f"--label-prompts {path!r} is neither a JSON object nor a file; "
                         'give {"label": "a text for it", ...} or a .json file holding one')
    return Path(path).read_text(encoding="utf-8")


@torch.no_grad()
def init_head_from_prompts(model: SequenceClassifier, tokenizer: Tokenizer,
                           prompts: Sequence[str], pad_id: int, *, max_length: int,
                           keep_last: bool) -> None:
    """Start `model`'s head as a zero-shot classifier: cosine to each label's prompt.

    Each prompt (one per label, in label order) is pooled as the classifier pools a text,
    and `SequenceClassifier.set_prototypes` turns those vectors into the head. No training
    data is read, so under DP the start costs no privacy.
    """
    was_training = model.training
    model.eval()  # no dropout in the prototypes
    batch = collate_classify(encode_texts(tokenizer, prompts, max_length=max_length,
                                          keep_last=keep_last), pad_id)
    model.set_prototypes(model.pooled(batch.ids, batch.attention_mask))
    model.train(was_training)


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


class ClassifyTask(TaskSpec[readers.TextExample, ClassifyFeature]):
    """One label per text: TSV/CSV in, a pooled linear head, accuracy first."""

    name = "classify"
    headline = "accuracy"
    # From benchmarks/finetune_sweep.py sst2 (docs/benchmarks.md, "Fine-tuning defaults
    # from the sweep"): all-MiniLM-L6-v2 on a text-disjoint SST-2 split, one change at a
    # time; 1 epoch 87.7% against 86.5% at 0.4 (lr 5e-5 / 2e-4 at 0.4: 86.3 / 87.0).
    defaults: ClassVar[dict[str, Any]] = {
        "lr": 1e-4, "epochs": 1.0, "batch_size": 32, "max_length": 64,
        "freeze_embeddings": True,
        # Best weights by validation accuracy: evaluate every 250 steps, stop after 3
        # evaluations without gain.
        "eval_every": 250, "patience": 3,
    }
    weighted = True

    def read(self, path: str | Path, labels: Sequence[str] | None = None, *,
             labelled: bool = True) -> list[readers.TextExample]:
        """Rows of a TSV/CSV file with a text column and a `label` column."""
        return readers.read_classification(path, labels=labels, require_labels=labelled)

    def label_set(self, examples: list[readers.TextExample]) -> list[str]:
        """The sorted label names."""
        return sorted({e.label for e in examples})

    def check_labels(self, labels: Sequence[str], examples: list[readers.TextExample]) -> None:
        """Refuse a validation label that training never saw."""
        for e in examples:
            if e.label not in labels:
                raise readers.TaskDataError(f"line {e.line}: validation label {e.label!r} "
                                            f"never occurs in training ({list(labels)})")

    def text_of(self, example: readers.TextExample) -> str:
        """The text."""
        return example.text

    def encode(self, tokenizer: Any, examples: list[readers.TextExample], info: TaskInfo, *,
               labelled: bool = True) -> list[ClassifyFeature]:
        """Tokenized texts (an encoder keeps its final [SEP] when cut) and label indexes."""
        index = {label: i for i, label in enumerate(info.labels)}
        targets = [index[e.label] for e in examples] if labelled else None
        return encode_texts(tokenizer, [e.text for e in examples], targets,
                            max_length=info.max_length, keep_last=info.arch == "encoder")

    def init_head(self, model: nn.Module, tokenizer: Any, info: TaskInfo,
                  prompts: str, pad_id: int) -> dict[str, str]:
        """`--label-prompts`: the head starts as cosine to each label's text (returned)."""
        texts = read_label_prompts(prompts, info.labels)
        init_head_from_prompts(model, tokenizer, list(texts.values()), pad_id,
                               max_length=info.max_length, keep_last=info.arch == "encoder")
        return texts

    def collate(self, features: list[ClassifyFeature], pad_id: int) -> TensorBatch:
        """See `collate_classify`."""
        return collate_classify(features, pad_id)

    def class_labels(self, features: list[ClassifyFeature]) -> list[int]:
        """The label index of every feature."""
        return [f.label for f in features]

    def objective(self, class_weights: torch.Tensor | None = None, *,
                  info: TaskInfo | None = None) -> Objective:
        """Cross-entropy of the class logits."""
        return functools.partial(classify_loss, class_weights=class_weights)

    def private_objective(self, info: TaskInfo | None = None) -> Objective:
        """Each row's unweighted cross-entropy (B,)."""
        return classify_losses

    def build_model(self, info: TaskInfo, backbone: nn.Module) -> SequenceClassifier:
        """A pooled linear head with one output per label."""
        return SequenceClassifier(backbone, len(info.labels), pooling=info.pooling,
                                  dropout=info.dropout)

    def evaluate(self, model: nn.Module, tokenizer: Any, info: TaskInfo,
                 examples: list[readers.TextExample], pad_id: int) -> dict[str, Any]:
        """Accuracy, macro F1, per-class scores and the confusion matrix."""
        probs = predict_classify(model, self.encode(tokenizer, examples, info), pad_id)
        predicted = [info.labels[i] for i in probs.argmax(-1).tolist()]
        truth = [e.label for e in examples]
        prf = metrics.precision_recall_f1(truth, predicted, info.labels)
        return {"accuracy": metrics.accuracy(truth, predicted), "f1": prf["macro"]["f1"],
                "macro": prf["macro"], "micro": prf["micro"], "per_class": prf["per_class"],
                "confusion_matrix": metrics.confusion_matrix(truth, predicted, info.labels),
                "n": len(examples)}

    def report(self, model: nn.Module, tokenizer: Any, info: TaskInfo,
               examples: list[readers.TextExample], pad_id: int, *, bins: int) -> Report:
        """Accuracy, F1 averages, per-class table, confusion matrix, calibration (ECE)."""
        probs = predict_classify(model, self.encode(tokenizer, examples, info), pad_id)
        parts = breakdown.labelled_predictions([e.label for e in examples], probs, info.labels,
                                               bins)
        return Report(self.name, {**parts.metrics, "n": len(examples)}, tables=parts.tables,
                      figures=parts.figures)

    def example_from(self, value: Any) -> readers.TextExample:
        """A text (str) to classify."""
        return readers.TextExample(text=text_input(value, self.name), label=None, line=0)

    def predict_examples(self, model: nn.Module, tokenizer: Any, info: TaskInfo,
                         examples: list[readers.TextExample], pad_id: int, *,
                         max_new_tokens: int = 256) -> Iterator[dict[str, Any]]:
        """{"text", "label", "probs": {label: probability}} per row."""
        features = self.encode(tokenizer, examples, info, labelled=False)
        for example, row in zip(examples, predict_classify(model, features, pad_id),
                                strict=True):
            yield {"text": example.text, "label": info.labels[int(row.argmax())],
                   "probs": dict(zip(info.labels, [round(float(p), 6) for p in row],
                                     strict=True))}


SPEC = ClassifyTask()
