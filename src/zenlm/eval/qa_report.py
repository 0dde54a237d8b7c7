"""Report pieces for extractive QA: EM/F1, calibration against exact match, F1 spread."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zenlm.eval import calibration, metrics
from zenlm.eval.breakdown import Parts, reliability_figure
from zenlm.eval.report import Figure, Table

#: The rows of the "Answers by F1" table (F1 in 0-1).
F1_BANDS = ("wrong (F1 0)", "partial, F1 < 0.5", "partial, F1 >= 0.5", "right (F1 1)")


def answers_report(predictions: dict[str, str], confidence: dict[str, float],
                   references: dict[str, Sequence[str]], n_bins: int) -> Parts:
    """EM and F1 (percent, official SQuAD v1.1), ECE of the answers' probability vs EM.

    Args:
        predictions: The answer text of each question id.
        confidence: The model's probability of each answer, in [0, 1].
        references: The gold answers of each question id.
        n_bins: Equal-width calibration bins.

    Returns:
        Metrics "exact_match", "f1", "mean_confidence", "ece", "mce", "calibration",
        "f1_bands"; tables Answers by F1 and Calibration; figures reliability diagram
        and F1 histogram.
    """
    per_question = metrics.squad_per_question(predictions, references)
    ids = list(references)
    exact = [per_question[q][0] for q in ids]
    f1 = [per_question[q][1] for q in ids]
    probs = [confidence.get(q, 0.0) for q in ids]
    bins = calibration.reliability(probs, exact, n_bins)
    bands = _bands(f1)
    numbers = {**metrics.squad_scores(predictions, references),
               "mean_confidence": sum(probs) / len(probs), **calibration.summary(bins),
               "f1_bands": bands}
    tables = [Table("Answers by F1", ["answers", "questions", "share"],
                    [[name, count, count / len(ids)] for name, count in bands.items()],
                    "F1 is SQuAD's token overlap of each answer with its best gold answer."),
              calibration.table(bins, "answer probability (exact match counts as correct)")]
    figures = [reliability_figure(bins, "answer probability (softmax start x end)"),
               Figure("f1_histogram", f"Per-question F1 ({len(ids)} questions)",
                      _draw_histogram(f1))]
    return Parts(numbers, tables, figures)


def _bands(f1: Sequence[float]) -> dict[str, int]:
    """Questions per F1 band of `F1_BANDS` (each question in exactly one)."""
    counts = dict.fromkeys(F1_BANDS, 0)
    for value in f1:
        band = 0 if value == 0.0 else 3 if value == 1.0 else 1 if value < 0.5 else 2
        counts[F1_BANDS[band]] += 1
    return counts


def _draw_histogram(f1: Sequence[float]) -> Any:
    def draw(axes: Any) -> None:
        axes.hist(f1, bins=[i / 10 for i in range(11)], color="tab:blue", edgecolor="black")
        axes.set_xlim(0, 1)
        axes.set_xlabel("F1 of the answer (SQuAD token overlap)")
        axes.set_ylabel("questions")

    return draw
