"""Report pieces for labelled predictions: per-label scores, confusion matrix, calibration.

`labelled_predictions` turns class probabilities and the true labels into what a
report shows: accuracy, macro/micro/weighted P/R/F1, per-label scores, the confusion
matrix (a table for small label sets, a heat map always), the reliability diagram
and ECE of the predicted label's probability, and the Brier score. Classification
scores examples with it; NER scores tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from zenlm.eval import calibration, metrics
from zenlm.eval.report import Figure, Table

#: Label sets up to this size also get their confusion matrix as a Markdown table.
MAX_TABLE_LABELS = 20


@dataclass
class Parts:
    """Metrics (JSON-able), tables and figures that go into a `Report`."""

    metrics: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


def labelled_predictions(truth: Sequence[str], probs: torch.Tensor, labels: Sequence[str],
                         n_bins: int, *, item: str = "example",
                         matrix_name: str = "confusion_matrix") -> Parts:
    """Everything a report shows about single-label predictions.

    Args:
        truth: (N,) the true label of each item.
        probs: (N, C) class probabilities (softmax), columns in `labels` order.
        labels: The C label names.
        n_bins: Equal-width calibration bins.
        item: What one prediction is ("example", "token"), for captions.
        matrix_name: File stem of the confusion-matrix PNG.

    Returns:
        Metrics "accuracy", "f1" (macro), "weighted_f1", "ece", "mce", "brier", "macro",
        "micro", "weighted", "per_class", "labels", "confusion_matrix", "calibration";
        tables Per label, Averages, Confusion matrix (small label sets), Calibration;
        figures confusion matrix and reliability diagram.
    """
    index = {label: i for i, label in enumerate(labels)}
    targets = torch.tensor([index[label] for label in truth], dtype=torch.long)
    confidence, best = probs.float().max(-1)
    predicted = [labels[i] for i in best.tolist()]
    prf = metrics.precision_recall_f1(truth, predicted, labels)
    matrix = metrics.confusion_matrix(truth, predicted, labels)
    bins = calibration.reliability(confidence, best == targets, n_bins)
    numbers = {"accuracy": metrics.accuracy(truth, predicted), "f1": prf["macro"]["f1"],
               "weighted_f1": prf["weighted"]["f1"], **calibration.summary(bins),
               "brier": calibration.brier_score(probs, targets), **prf,
               "labels": list(labels), "confusion_matrix": matrix}
    tables = [per_label_table(prf["per_class"], "label"), averages_table(prf)]
    tables += [t for t in [confusion_table(matrix, labels)] if t is not None]
    tables.append(calibration.table(bins, f"the predicted label's probability per {item}"))
    figures = [metrics.confusion_figure(matrix, labels, matrix_name,
                                        f"Confusion matrix ({len(truth)} {item}s)"),
               reliability_figure(bins, f"probability of the predicted label ({item})")]
    return Parts(numbers, tables, figures)


def per_label_table(per_label: dict[str, dict[str, float]], what: str,
                    title: str = "Per label") -> Table:
    """Precision, recall, F1 and support of each label."""
    rows = [[label, m["precision"], m["recall"], m["f1"], m["support"]]
            for label, m in per_label.items()]
    return Table(title, [what, "precision", "recall", "f1", "support"], rows)


def averages_table(prf: dict[str, Any]) -> Table:
    """Macro, micro and weighted averages of precision, recall and F1."""
    rows = [[name, prf[name]["precision"], prf[name]["recall"], prf[name]["f1"]]
            for name in ("macro", "micro", "weighted")]
    note = ("macro: the labels' plain mean (the headline `f1`); micro: pooled counts "
            "(equal to accuracy here); weighted: the mean weighted by support.")
    return Table("Averages", ["average", "precision", "recall", "f1"], rows, note)


def confusion_table(matrix: Sequence[Sequence[int]], labels: Sequence[str],
                    title: str = "Confusion matrix") -> Table | None:
    """The matrix as a table (rows true, columns predicted), or None for many labels."""
    if len(labels) > MAX_TABLE_LABELS:
        return None
    rows = [[label, *row] for label, row in zip(labels, matrix, strict=True)]
    return Table(title, ["true / predicted", *labels], rows,
                 "Rows are the true labels, columns the predicted ones.")


def reliability_figure(bins: calibration.Reliability, what: str) -> Figure:
    """The reliability diagram as a report `Figure` named "reliability"."""
    return Figure("reliability", "Reliability diagram", calibration.draw_reliability(bins, what))
