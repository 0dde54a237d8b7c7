"""Calibration: do a model's confidences mean what they say?

A classifier is calibrated when, of the predictions it makes with confidence 0.8,
80% are right. The reliability diagram and the expected calibration error (ECE)
measure this as Guo et al. (2017, "On Calibration of Modern Neural Networks") define
them: confidences are put into M equal-width bins B_m = ((m-1)/M, m/M] (0 goes to the
first), and

    ECE = sum_m |B_m| / N * |acc(B_m) - conf(B_m)|
    MCE = max_m over non-empty bins of |acc(B_m) - conf(B_m)|

with acc the fraction correct and conf the mean confidence of the bin. The binning is
scikit-learn's `calibration_curve(strategy="uniform")`.

`DEFAULT_BINS` is 15, the M of Guo et al., which most published ECE figures use, so the
numbers compare with the literature; fewer bins hide miscalibration, many more leave
bins nearly empty on a validation set of a few hundred examples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zenlm.eval.report import Table

if TYPE_CHECKING:  # torch is imported where it is used, so the CLI starts fast
    import torch

DEFAULT_BINS = 15


@dataclass
class Reliability:
    """Equal-width confidence bins: what a reliability diagram draws.

    Attributes:
        edges: (M + 1,) bin edges, 0 to 1.
        counts: (M,) examples per bin.
        confidence: (M,) mean confidence per bin (NaN when empty).
        accuracy: (M,) fraction correct per bin (NaN when empty).
    """

    edges: list[float]
    counts: list[int]
    confidence: list[float]
    accuracy: list[float]

    @property
    def total(self) -> int:
        """Examples binned."""
        return sum(self.counts)

    def gaps(self) -> list[float | None]:
        """|accuracy - confidence| per bin (None when empty)."""
        return [abs(a - c) if n else None
                for n, a, c in zip(self.counts, self.accuracy, self.confidence, strict=True)]

    def ece(self) -> float:
        """Expected calibration error: the count-weighted mean gap."""
        return sum(n * g for n, g in zip(self.counts, self.gaps(), strict=True) if n) / self.total

    def mce(self) -> float:
        """Maximum calibration error: the largest gap of a non-empty bin."""
        return max(g for g in self.gaps() if g is not None)

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-able record per bin: lower, upper, count, confidence, accuracy."""
        return [{"lower": lo, "upper": hi, "count": n, "confidence": c if n else None,
                 "accuracy": a if n else None}
                for lo, hi, n, c, a in zip(self.edges[:-1], self.edges[1:], self.counts,
                                           self.confidence, self.accuracy, strict=True)]


def check_bins(n_bins: int) -> int:
    """`n_bins` if it is a positive integer, else a ValueError naming it."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"--bins must be a positive integer (e.g. {DEFAULT_BINS}), "
                         f"got {n_bins!r}")
    return n_bins


def reliability(confidence: Sequence[float] | torch.Tensor,
                correct: Sequence[bool | float] | torch.Tensor,
                n_bins: int = DEFAULT_BINS) -> Reliability:
    """Bin predictions by confidence.

    Args:
        confidence: (N,) the model's probability of its own prediction, in [0, 1].
        correct: (N,) whether (1) or not (0) each prediction was right.
        n_bins: M, the number of equal-width bins.

    Raises:
        ValueError: no predictions, lengths differ, a confidence outside [0, 1], or
            a bad `n_bins`.
    """
    import torch

    check_bins(n_bins)
    conf = torch.as_tensor(confidence, dtype=torch.float64).flatten()
    right = torch.as_tensor(correct, dtype=torch.float64).flatten()
    if conf.numel() == 0 or conf.numel() != right.numel():
        raise ValueError(f"need as many confidences as outcomes, at least one; got "
                         f"{conf.numel()} and {right.numel()}")
    outside = ((conf < 0) | (conf > 1) | conf.isnan()).nonzero()
    if outside.numel():
        index = int(outside[0])
        raise ValueError(f"confidence {float(conf[index])!r} (item {index}) is not in [0, 1]")
    edges = torch.tensor([m / n_bins for m in range(n_bins + 1)], dtype=torch.float64)
    # right=False: a confidence equal to an inner edge goes to the lower bin, ((m-1)/M, m/M]
    which = torch.bucketize(conf, edges[1:-1], right=False)
    counts = torch.bincount(which, minlength=n_bins).to(torch.float64)
    sums_conf = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, which, conf)
    sums_right = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, which, right)
    return Reliability(edges.tolist(), counts.long().tolist(), (sums_conf / counts).tolist(),
                       (sums_right / counts).tolist())


def brier_score(probs: Sequence[Sequence[float]] | torch.Tensor,
                targets: Sequence[int] | torch.Tensor) -> float:
    """Multi-class Brier score (Brier, 1950): mean over examples of sum_c (p_c - y_c)^2.

    0 is perfect, 2 the worst. For two classes it is twice scikit-learn's
    `brier_score_loss`, which scores the positive class's column alone.

    Args:
        probs: (N, C) class probabilities.
        targets: (N,) true class indexes.
    """
    import torch

    p = torch.as_tensor(probs, dtype=torch.float64)
    y = torch.as_tensor(targets, dtype=torch.long)
    if p.ndim != 2 or p.shape[0] != y.numel() or p.shape[0] == 0:
        raise ValueError(f"need (N, C) probabilities and N targets, N > 0; got "
                         f"{tuple(p.shape)} and {tuple(y.shape)}")
    one_hot = torch.nn.functional.one_hot(y, p.shape[1]).to(torch.float64)
    return float(((p - one_hot) ** 2).sum(-1).mean())


def summary(bins: Reliability) -> dict[str, Any]:
    """Report metrics: "ece", "mce" and "calibration" (the bin count and the bins)."""
    return {"ece": bins.ece(), "mce": bins.mce(),
            "calibration": {"bins": len(bins.counts), "reliability": bins.rows()}}


def table(bins: Reliability, what: str = "confidence") -> Table:
    """The non-empty bins as a report table: range, count, mean confidence, accuracy, gap."""
    rows = [[f"({lo:.3f}, {hi:.3f}]", n, c, a, abs(a - c)]
            for lo, hi, n, c, a in zip(bins.edges[:-1], bins.edges[1:], bins.counts,
                                       bins.confidence, bins.accuracy, strict=True) if n]
    note = (f"{len(bins.counts)} equal-width bins of {what}; empty bins are left out. "
            f"ECE = {bins.ece():.4f} is the mean gap weighted by count, "
            f"MCE = {bins.mce():.4f} the largest gap.")
    return Table("Calibration", ["bin", "count", "confidence", "accuracy", "gap"], rows, note)


def draw_reliability(bins: Reliability, what: str = "confidence") -> Callable[[Any], None]:
    """A `Figure.draw` for the reliability diagram of `bins`, with a count panel below.

    Bars are each bin's accuracy, hatched red the gap to its mean confidence, the
    diagonal is perfect calibration; the panel below shows how many items each bin
    holds (as Guo et al. draw it), so a large gap in a near-empty bin reads as such.

    Args:
        bins: The binned predictions.
        what: What the confidence is, for the x-axis label.
    """
    def draw(axes: Any) -> None:
        from mpl_toolkits.axes_grid1 import make_axes_locatable

        width = bins.edges[1] - bins.edges[0]
        full = [(x, a, c) for x, n, a, c in zip(bins.edges[:-1], bins.counts, bins.accuracy,
                                                 bins.confidence, strict=True) if n]
        lefts, accuracy = [x for x, _, _ in full], [a for _, a, _ in full]
        axes.bar(lefts, accuracy, width=width, align="edge", color="tab:blue",
                 edgecolor="black", label="accuracy")
        axes.bar(lefts, [c - a for _, a, c in full], bottom=accuracy, width=width,
                 align="edge", fill=False, edgecolor="tab:red", hatch="//",
                 label="gap to confidence")
        axes.plot([0, 1], [0, 1], linestyle="--", color="black", label="perfect calibration")
        axes.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy")
        axes.tick_params(labelbottom=False)
        axes.text(0.03, 0.95, f"ECE {bins.ece():.4f}\nMCE {bins.mce():.4f}\n"
                  f"{len(bins.counts)} bins, {bins.total} items", va="top",
                  transform=axes.transAxes, bbox={"facecolor": "white", "alpha": 0.8})
        axes.legend(loc="lower right", fontsize="small")
        counts = make_axes_locatable(axes).append_axes("bottom", size="28%", pad=0.1,
                                                       sharex=axes)
        counts.bar(bins.edges[:-1], bins.counts, width=width, align="edge", color="0.6",
                   edgecolor="black")
        counts.set(xlim=(0, 1), xlabel=what, ylabel="items")

    return draw
