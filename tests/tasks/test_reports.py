"""The confidence QA reports for an answer, against a brute-force float64 reference."""

from __future__ import annotations

import math

import pytest
import torch

from zenlm.data.tasks import QAExample
from zenlm.tasks.qa import QAFeature, postprocess_qa, scored_answers


def _softmax64(logits: torch.Tensor) -> list[float]:
    values = [float(v) for v in logits]
    top = max(values)
    weights = [math.exp(v - top) for v in values]
    return [w / sum(weights) for w in weights]


def _reference(features, logits, max_answer_length=30):
    """Every valid span of every window; the best by start + end logit, its probability."""
    best = None
    for feature, (start, end) in zip(features, logits, strict=True):
        p_start, p_end = _softmax64(start), _softmax64(end)
        for s, first in enumerate(feature.offsets):
            for e, last in enumerate(feature.offsets):
                if first is None or last is None or e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(start[s]) + float(end[e])
                if best is None or score > best[0]:
                    best = (score, first[0], last[1], p_start[s] * p_end[e])
    return best


@pytest.mark.parametrize("seed", range(5))
def test_answer_confidence_is_its_windows_start_times_end_probability(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    context = "alpha beta gamma delta epsilon zeta eta theta"
    words = [(i, i + len(w)) for i, w in _positions(context)]
    # two windows of one question: 3 question/special tokens, then 5 context words each
    features = [QAFeature(0, list(range(8)), [0] * 8, [None, None, None, *words[:5]]),
                QAFeature(0, list(range(8)), [0] * 8, [None, None, None, *words[3:]])]
    logits = [(torch.randn(8, generator=generator) * 3, torch.randn(8, generator=generator) * 3)
              for _ in features]
    example = QAExample("q", "which?", context, [])
    (answer, confidence), = scored_answers([example], features, logits).values()
    _, first, last, expected = _reference(features, logits)
    assert answer == context[first:last]
    assert confidence == pytest.approx(expected, rel=1e-5)
    assert postprocess_qa([example], features, logits) == {"q": answer}  # same choice


def test_no_valid_span_answers_empty_with_zero_confidence() -> None:
    feature = QAFeature(0, [1, 2], [0, 0], [None, None])
    example = QAExample("q", "which?", "text", [])
    assert scored_answers([example], [feature], [(torch.zeros(2), torch.zeros(2))]) == {
        "q": ("", 0.0)}


def _positions(text: str) -> list[tuple[int, str]]:
    out, at = [], 0
    for word in text.split():
        at = text.index(word, at)
        out.append((at, word))
        at += len(word)
    return out
