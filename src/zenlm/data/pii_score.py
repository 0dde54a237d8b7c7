"""Span-level precision and recall of a PII detector, per type, exact or overlap matching.

A predicted span is correct when a gold span of the same type in the same text has the same
start and end (`exact`) or shares at least one character with it (`overlap`). Precision is
the share of predicted spans that are correct; recall the share of gold spans that some
predicted span matches. Under `exact` both are one-to-one; under `overlap` one long prediction
covering two gold spans counts once as a prediction and recalls both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Span = tuple[int, int, str]  # start, end (exclusive, characters), type
Match = Literal["exact", "overlap"]


@dataclass
class TypeScore:
    """Counts and rates of one PII type. Rates are None when their denominator is 0."""

    predicted: int = 0
    predicted_correct: int = 0
    gold: int = 0
    gold_found: int = 0

    @property
    def precision(self) -> float | None:
        """Correct predictions / predictions."""
        return self.predicted_correct / self.predicted if self.predicted else None

    @property
    def recall(self) -> float | None:
        """Gold spans found / gold spans."""
        return self.gold_found / self.gold if self.gold else None


def _matches(a: Span, b: Span, match: Match) -> bool:
    if a[2] != b[2]:
        return False
    if match == "exact":
        return a[0] == b[0] and a[1] == b[1]
    return a[0] < b[1] and b[0] < a[1]


def score_spans(gold: Sequence[Sequence[Span]], predicted: Sequence[Sequence[Span]],
                match: Match = "exact") -> dict[str, TypeScore]:
    """Per-type scores over texts; `gold[i]` and `predicted[i]` are the spans of text i.

    Raises:
        ValueError: the two lists have different lengths, or `match` is unknown.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold texts but {len(predicted)} predicted ones")
    if match not in ("exact", "overlap"):
        raise ValueError(f"match={match!r}: use 'exact' or 'overlap'")
    scores: dict[str, TypeScore] = {}
    for gold_spans, predicted_spans in zip(gold, predicted, strict=True):
        for span in predicted_spans:
            score = scores.setdefault(span[2], TypeScore())
            score.predicted += 1
            score.predicted_correct += any(_matches(span, g, match) for g in gold_spans)
        for span in gold_spans:
            score = scores.setdefault(span[2], TypeScore())
            score.gold += 1
            score.gold_found += any(_matches(span, p, match) for p in predicted_spans)
    return dict(sorted(scores.items()))


def total(scores: dict[str, TypeScore]) -> TypeScore:
    """All types pooled (micro-averaged)."""
    out = TypeScore()
    for score in scores.values():
        out.predicted += score.predicted
        out.predicted_correct += score.predicted_correct
        out.gold += score.gold
        out.gold_found += score.gold_found
    return out
