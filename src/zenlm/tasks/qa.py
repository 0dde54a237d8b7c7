"""Extractive QA: document-stride windows with offset mapping, labels, n-best decoding.

A (question, context) pair longer than `max_length` tokens becomes several windows of
the context that overlap by `stride` tokens; each window keeps the character offsets
of its context tokens, so a predicted token span maps back to a substring of the
original context. Decoding takes the n best start and end tokens of every window,
keeps valid spans (inside the context, end >= start, at most `max_answer_length`
tokens) and returns the best-scoring span over all windows (SQuAD v1.1: always answer).
`SPEC` is the qa task.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import tokenizers
import torch
import torch.nn.functional as F
from torch import nn

from zenlm.data import tasks as readers
from zenlm.data.tasks import QAExample
from zenlm.eval import metrics, qa_report
from zenlm.eval.report import Report
from zenlm.models.heads import SpanQA
from zenlm.tasks.batching import TensorBatch
from zenlm.tasks.collate import pad_ids, pad_labels
from zenlm.tasks.defaults import GENERIC
from zenlm.tasks.spec import Objective, TaskInfo, TaskSpec, text_input
from zenlm.tokenizer import Tokenizer


@dataclass
class QAFeature:
    """One window: ids, segment ids, context offsets, answer token span (0, 0 if absent).

    Attributes:
        offsets: (start, end) characters in the context of each token; None for question
            and special tokens.
    """

    example: int
    ids: list[int]
    type_ids: list[int]
    offsets: list[tuple[int, int] | None]
    start: int = 0
    end: int = 0


def windows_tokenizer(tokenizer: Tokenizer, max_length: int, stride: int) -> tokenizers.Tokenizer:
    """A copy of the backend that cuts only the context, with `stride` tokens of overlap."""
    backend = tokenizers.Tokenizer.from_str(tokenizer.backend.to_str())
    try:
        backend.enable_truncation(max_length, stride=stride, strategy="only_second")
    except Exception as exc:  # tokenizers raises a bare Exception
        raise _stride_error(stride, max_length, str(exc)) from exc
    return backend


def _stride_error(stride: int, max_length: int, detail: str) -> ValueError:
    """The flags to change when the window overlap leaves no room for new context."""
    return ValueError(f"--stride {stride} is not below the room left for the context in a "
                      f"--max-length {max_length} window ({detail}); give a smaller --stride "
                      "or a larger --max-length")


def qa_features(
    tokenizer: Tokenizer, examples: Sequence[QAExample], *, max_length: int = 384,
    stride: int = 128, max_question_tokens: int = 64, labelled: bool = True,
) -> list[QAFeature]:
    """Windows of every example; with `labelled`, the first answer's token span in each."""
    backend = windows_tokenizer(tokenizer, max_length, stride)
    features = []
    for index, example in enumerate(examples):
        question = _clip_question(tokenizer, example.question, max_question_tokens)
        try:
            encoding = backend.encode(question, example.context)
        except Exception as exc:  # tokenizers raises a bare Exception
            if "stride" not in str(exc):
                raise
            raise _stride_error(stride, max_length, f"question {example.id!r}: {exc}") from exc
        for window in [encoding, *encoding.overflowing]:
            feature = _feature(index, window)
            if labelled and example.answers:
                text, char_start = example.answers[0]
                feature.start, feature.end = _token_span(feature, char_start,
                                                         char_start + len(text))
            features.append(feature)
    return features


def _clip_question(tokenizer: Tokenizer, question: str, limit: int) -> str:
    """The question cut to `limit` tokens (at a character offset), so windows keep context."""
    encoding = tokenizer.backend.encode(question, add_special_tokens=False)
    if len(encoding.ids) <= limit:
        return question
    return question[: encoding.offsets[limit - 1][1]]


def _feature(index: int, window: tokenizers.Encoding) -> QAFeature:
    offsets = [tuple(o) if s == 1 else None
               for o, s in zip(window.offsets, window.sequence_ids, strict=True)]
    return QAFeature(index, list(window.ids), list(window.type_ids), offsets)


def _token_span(feature: QAFeature, char_start: int, char_end: int) -> tuple[int, int]:
    """Token indexes of the answer in this window, or (0, 0) when it is not all inside."""
    context = [i for i, o in enumerate(feature.offsets) if o is not None]
    if not context:
        return 0, 0
    first, last = context[0], context[-1]
    if feature.offsets[first][0] > char_start or feature.offsets[last][1] < char_end:
        return 0, 0
    start = next(i for i in context if feature.offsets[i][1] > char_start)
    end = next(i for i in reversed(context) if feature.offsets[i][0] < char_end)
    return start, end


def collate_qa(features: list[QAFeature], pad_id: int) -> TensorBatch:
    """TensorBatch(ids, attention_mask, token_type_ids (B, T), starts, ends (B,))."""
    ids, mask = pad_ids([f.ids for f in features], pad_id)
    types = pad_labels([f.type_ids for f in features], ids.shape[1], 0)
    return TensorBatch(
        ids=ids, attention_mask=mask, token_type_ids=types,
        starts=torch.tensor([f.start for f in features]),
        ends=torch.tensor([f.end for f in features]),
    )


def qa_loss(model: nn.Module, batch: TensorBatch) -> torch.Tensor:
    """Mean of the start and end cross-entropies (a window without the answer points at 0)."""
    start, end = model(batch.ids, batch.attention_mask, batch.token_type_ids)
    starts = F.cross_entropy(start.float(), batch.starts)
    return (starts + F.cross_entropy(end.float(), batch.ends)) / 2


def best_spans(
    start_logits: torch.Tensor, end_logits: torch.Tensor,
    offsets: Sequence[tuple[int, int] | None], *, n_best: int = 20, max_answer_length: int = 30,
) -> list[tuple[float, int, int]]:
    """Valid (score, char_start, char_end) spans of one window, best first.

    Args:
        start_logits: (T,) scores of each token starting the answer.
        end_logits: (T,) scores of each token ending it.
        offsets: Context character offsets per token (None outside the context).
        n_best: Candidates taken from each end, and spans returned.
        max_answer_length: Longest span in tokens.
    """
    length = len(offsets)
    starts = start_logits[:length].topk(min(n_best, length)).indices.tolist()
    ends = end_logits[:length].topk(min(n_best, length)).indices.tolist()
    spans = []
    for s in starts:
        for e in ends:
            if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                continue
            score = float(start_logits[s] + end_logits[e])
            spans.append((score, offsets[s][0], offsets[e][1]))
    return sorted(spans, reverse=True)[:n_best]


def postprocess_qa(
    examples: Sequence[QAExample], features: Sequence[QAFeature],
    logits: Sequence[tuple[torch.Tensor, torch.Tensor]], *, n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, str]:
    """Answer text per question id: the best valid span over all of its windows."""
    spans = best_answer_spans(examples, features, logits, n_best=n_best,
                              max_answer_length=max_answer_length)
    return {example.id: example.context[first:last]
            for example, (_, first, last) in zip(examples, spans, strict=True)}


def best_answer_spans(
    examples: Sequence[QAExample], features: Sequence[QAFeature],
    logits: Sequence[tuple[torch.Tensor, torch.Tensor]], *, n_best: int = 20,
    max_answer_length: int = 30,
) -> list[tuple[float, int, int]]:
    """(score, char_start, char_end) of each example's best span over all of its windows.

    The score is start logit + end logit; a question with no valid span gets
    (-inf, 0, 0), an empty answer.
    """
    best = _best_per_example(features, logits, n_best=n_best,
                             max_answer_length=max_answer_length)
    return [best[index][0] if index in best else (float("-inf"), 0, 0)
            for index in range(len(examples))]


def scored_answers(
    examples: Sequence[QAExample], features: Sequence[QAFeature],
    logits: Sequence[tuple[torch.Tensor, torch.Tensor]], *, n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, tuple[str, float]]:
    """(answer, confidence) per question id, the answer that of `best_answer_spans`.

    The confidence is the probability the model gives the span in its window,
    softmax(start)[s] * softmax(end)[e], the distributions it was trained on (0 when no
    window has a valid span).
    """
    best = _best_per_example(features, logits, n_best=n_best,
                             max_answer_length=max_answer_length)
    answers = {}
    for index, example in enumerate(examples):
        if index not in best:
            answers[example.id] = ("", 0.0)
            continue
        (score, first, last), window = best[index]
        start, end = logits[window]
        log_norm = float(start.logsumexp(-1) + end.logsumexp(-1))
        answers[example.id] = (example.context[first:last], math.exp(score - log_norm))
    return answers


def _best_per_example(
    features: Sequence[QAFeature], logits: Sequence[tuple[torch.Tensor, torch.Tensor]], *,
    n_best: int, max_answer_length: int,
) -> dict[int, tuple[tuple[float, int, int], int]]:
    """Example index -> its best (score, char_start, char_end) and the window it is in."""
    best: dict[int, tuple[tuple[float, int, int], int]] = {}
    for window, (feature, (start, end)) in enumerate(zip(features, logits, strict=True)):
        spans = best_spans(start, end, feature.offsets, n_best=n_best,
                           max_answer_length=max_answer_length)
        if spans and (feature.example not in best
                      or spans[0][0] > best[feature.example][0][0]):
            best[feature.example] = (spans[0], window)
    return best


@torch.inference_mode()
def predict_qa(
    model: nn.Module, examples: Sequence[QAExample], features: Sequence[QAFeature], pad_id: int,
    *, batch_size: int = 32, n_best: int = 20, max_answer_length: int = 30,
) -> dict[str, str]:
    """Run `model` (a SpanQA) over every window and post-process into answers."""
    logits = span_logits(model, features, pad_id, batch_size=batch_size)
    return postprocess_qa(examples, features, logits, n_best=n_best,
                          max_answer_length=max_answer_length)


@torch.inference_mode()
def span_logits(model: nn.Module, features: Sequence[QAFeature], pad_id: int, *,
                batch_size: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(start (T,), end (T,)) float32 logits of every window, T its own length."""
    model.eval()
    logits = []
    for first in range(0, len(features), batch_size):
        chunk = list(features[first:first + batch_size])
        batch = collate_qa(chunk, pad_id)
        start, end = model(batch.ids, batch.attention_mask, batch.token_type_ids)
        logits += [(start[r, : len(f.ids)].float(), end[r, : len(f.ids)].float())
                   for r, f in enumerate(chunk)]
    return logits


SPAN_OPTIONS = ("n_best", "max_answer_length")  # how answers are chosen (task.json options)


def span_options(info: TaskInfo) -> dict[str, int]:
    """n_best and max_answer_length of a model's task.json (older models: the defaults)."""
    return {name: int(info.options.get(name, GENERIC[name])) for name in SPAN_OPTIONS}


class QATask(TaskSpec[QAExample, QAFeature]):
    """Extractive QA: SQuAD in, start/end scores per token, F1 first."""

    name = "qa"
    headline = "f1"
    # The best settings measured (docs/benchmarks.md, "Fine-tuning defaults from the sweep",
    # all-MiniLM-L6-v2, SQuAD sample, held-out articles): lr 2e-4 for 2 epochs scored F1 70.4
    # against 69.0 at 1e-4; 384-token windows, dropout 0.1 and trained embeddings no better.
    defaults: ClassVar[dict[str, Any]] = {
        "lr": 2e-4, "epochs": 2.0, "batch_size": 16, "max_length": 256, "stride": 96,
        "freeze_embeddings": True, "eval_every": 350, "patience": 3,
        "n_best": 20, "max_answer_length": 30,
    }

    def read(self, path: str | Path, labels: Sequence[str] | None = None, *,
             labelled: bool = True) -> list[QAExample]:
        """Questions of a SQuAD v1.1 JSON file (`labels` does not apply)."""
        return readers.read_squad(path, require_answers=labelled)

    def text_of(self, example: QAExample) -> str:
        """The question and its context."""
        return f"{example.question} {example.context}"

    def group_of(self, index: int, example: QAExample) -> Hashable:
        """The article: no passage is in both the training and the validation split."""
        return example.title

    def encode(self, tokenizer: Any, examples: list[QAExample], info: TaskInfo, *,
               labelled: bool = True) -> list[QAFeature]:
        """Context windows of `info.max_length` tokens overlapping by `info.stride`."""
        return qa_features(tokenizer, examples, max_length=info.max_length, stride=info.stride,
                           labelled=labelled)

    def collate(self, features: list[QAFeature], pad_id: int) -> TensorBatch:
        """See `collate_qa`."""
        return collate_qa(features, pad_id)

    def objective(self, class_weights: torch.Tensor | None = None, *,
                  info: TaskInfo | None = None) -> Objective:
        """Mean of the start and end cross-entropies."""
        return qa_loss

    def build_model(self, info: TaskInfo, backbone: nn.Module) -> SpanQA:
        """Two scores per token: answer start and end."""
        return SpanQA(backbone)

    def options(self, values: dict[str, Any]) -> dict[str, Any]:
        """n_best and max_answer_length: evaluate and predict choose spans as validation did."""
        return {name: values[name] for name in SPAN_OPTIONS if values.get(name) is not None}

    def evaluate(self, model: nn.Module, tokenizer: Any, info: TaskInfo,
                 examples: list[QAExample], pad_id: int) -> dict[str, Any]:
        """SQuAD exact match and F1."""
        answers = predict_qa(model, examples, self.encode(tokenizer, examples, info), pad_id,
                             **span_options(info))
        refs = {e.id: [a for a, _ in e.answers] for e in examples}
        return {**metrics.squad_scores(answers, refs), "n": len(examples)}

    def report(self, model: nn.Module, tokenizer: Any, info: TaskInfo,
               examples: list[QAExample], pad_id: int, *, bins: int) -> Report:
        """EM/F1, calibration of the answer's probability against exact match, F1 spread."""
        features = self.encode(tokenizer, examples, info)
        scored = scored_answers(examples, features, span_logits(model, features, pad_id),
                                **span_options(info))
        refs = {e.id: [a for a, _ in e.answers] for e in examples}
        parts = qa_report.answers_report({q: a for q, (a, _) in scored.items()},
                                         {q: c for q, (_, c) in scored.items()}, refs, bins)
        return Report(self.name, {**parts.metrics, "n": len(examples)}, tables=parts.tables,
                      figures=parts.figures)

    def example_from(self, value: Any) -> QAExample:
        """A dict with "question" and "context" (and optionally "id")."""
        if not isinstance(value, dict) or not {"question", "context"} <= set(value):
            raise ValueError(f"task 'qa' predicts on dicts with 'question' and 'context', "
                             f"got {value!r}")
        question = text_input(value["question"], self.name, "a non-empty 'question'")
        context = text_input(value["context"], self.name, "a non-empty 'context'")
        return QAExample(id=str(value.get("id", "")), question=question, context=context,
                         answers=[])

    def predict_examples(self, model: nn.Module, tokenizer: Any, info: TaskInfo,
                         examples: list[QAExample], pad_id: int, *,
                         max_new_tokens: int = 256) -> Iterator[dict[str, Any]]:
        """{"id", "answer", "start", "end", "score"} per question.

        `start`/`end` are character offsets into the context (`answer` is
        context[start:end]); `score` is the span's start + end logit.
        """
        features = self.encode(tokenizer, examples, info, labelled=False)
        logits = span_logits(model, features, pad_id)
        spans = best_answer_spans(examples, features, logits, **span_options(info))
        for example, (score, first, last) in zip(examples, spans, strict=True):
            yield {"id": example.id, "answer": example.context[first:last], "start": first,
                   "end": last, "score": round(score, 4)}


SPEC = QATask()
