"""`zenlm evaluate --task membership`: does a fine-tuned model give its training rows away?

A loss-threshold membership-inference attack (Yeom et al., 2018): a model's loss on
the rows it was trained on tends to be lower than on rows it never saw, so "loss below
t" guesses membership. Given rows known to be in the training set (`--members`) and
rows known not to be (`--non-members`, from the same distribution), the report gives
the attack's ROC curve over every threshold t, its AUC (0.5: the attacker learns
nothing), its true-positive rate at low false-positive rates (what matters for the
few most exposed rows), and the best advantage max(TPR - FPR). A differentially
private model bounds every such attack: TPR <= e^epsilon * FPR + delta.

The `--task membership` evaluation itself (loading a model, its per-example losses) is
`zenlm.tasks.membership`; this module is the attack's arithmetic and report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from zenlm.eval.report import Figure, Report, Table

LOW_FPRS = (0.001, 0.01, 0.1)


def mann_whitney_auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """P(score of a positive > score of a negative) + 0.5 P(equal): the ROC AUC.

    Computed from ranks (average ranks for ties), the Mann-Whitney U statistic over
    n_pos * n_neg.

    Raises:
        ValueError: either side is empty.
    """
    if not positives or not negatives:
        raise ValueError(f"AUC needs members and non-members, got {len(positives)} and "
                         f"{len(negatives)}")
    scored = sorted([(s, 1) for s in positives] + [(s, 0) for s in negatives])
    rank_sum, i = 0.0, 0
    while i < len(scored):
        j = i
        while j < len(scored) and scored[j][0] == scored[i][0]:
            j += 1
        average = (i + 1 + j) / 2  # ranks i+1 .. j share their mean
        rank_sum += average * sum(label for _, label in scored[i:j])
        i = j
    n_pos, n_neg = len(positives), len(negatives)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def roc_curve(positives: Sequence[float], negatives: Sequence[float]
              ) -> tuple[list[float], list[float]]:
    """(FPR, TPR) of "score >= t" for every threshold t, from (0, 0) to (1, 1)."""
    scored = sorted([(s, 1) for s in positives] + [(s, 0) for s in negatives], reverse=True)
    fpr, tpr, tp, fp = [0.0], [0.0], 0, 0
    for index, (score, label) in enumerate(scored):
        tp, fp = tp + label, fp + (1 - label)
        if index + 1 == len(scored) or scored[index + 1][0] != score:
            fpr.append(fp / len(negatives))
            tpr.append(tp / len(positives))
    return fpr, tpr


def tpr_at(fpr: Sequence[float], tpr: Sequence[float], limit: float) -> float:
    """The best TPR of a threshold whose FPR is at most `limit`."""
    return max(t for f, t in zip(fpr, tpr, strict=True) if f <= limit)


def attack_report(inside: list[float], outside: list[float], settings: dict[str, Any],
                  dp: dict[str, Any] | None = None) -> Report:
    """The loss-threshold attack's Report from members' and non-members' losses.

    Args:
        inside: Loss of each member (a row the model was trained on).
        outside: Loss of each non-member.
        settings: What produced them (model, files, counts).
        dp: The model's differential-privacy record, if it has one.
    """
    scores_in, scores_out = [-x for x in inside], [-x for x in outside]  # low loss: member
    fpr, tpr = roc_curve(scores_in, scores_out)
    metrics: dict[str, Any] = {
        "auc": mann_whitney_auc(scores_in, scores_out),
        "advantage": max(t - f for f, t in zip(fpr, tpr, strict=True)),
        "tpr_at_fpr": {str(limit): tpr_at(fpr, tpr, limit) for limit in LOW_FPRS},
        "mean_loss_members": math.fsum(inside) / len(inside),
        "mean_loss_non_members": math.fsum(outside) / len(outside),
        "dp": dp,
    }
    rows = [[limit, metrics["tpr_at_fpr"][str(limit)]] for limit in LOW_FPRS]
    return Report("membership", metrics, settings,
                  tables=[Table("TPR at low FPR", ["FPR at most", "TPR"], rows)],
                  figures=[Figure("roc", "Membership attack ROC (loss threshold)",
                                  lambda ax: _draw_roc(ax, fpr, tpr, metrics["auc"]))])


def _draw_roc(ax: Any, fpr: list[float], tpr: list[float], auc: float) -> None:
    ax.plot(fpr, tpr, label=f"attack (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="chance")
    ax.set_xlabel("false-positive rate (non-members called members)")
    ax.set_ylabel("true-positive rate (members found)")
    ax.grid(alpha=0.3)
    ax.legend()
