"""Calibration (ECE, MCE, bins, Brier) and the per-label report pieces, against oracles.

Oracles: the float64 formulas of Guo et al. (2017) written out here with numpy,
scikit-learn's `calibration_curve(strategy="uniform")`, `confusion_matrix` and
`precision_recall_fscore_support`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zenlm.eval import calibration
from zenlm.eval.breakdown import labelled_predictions
from zenlm.eval.report import Report


def _predictions(n: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Confidences in [0, 1] and outcomes correlated with them (overconfident on purpose)."""
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.3, 1.0, n)
    correct = (rng.uniform(0, 1, n) < confidence ** 2).astype(np.float64)
    return confidence, correct


def _ece_mce(confidence: np.ndarray, correct: np.ndarray, m: int) -> tuple[float, float]:
    """Guo et al.: bins ((k-1)/M, k/M], ECE = sum |B|/N |acc - conf|, MCE = max gap."""
    ece, mce = 0.0, 0.0
    for k in range(1, m + 1):
        lower, upper = (k - 1) / m, k / m
        inside = (confidence > lower) & (confidence <= upper)
        if k == 1:
            inside |= confidence == 0.0
        if not inside.any():
            continue
        gap = abs(correct[inside].mean() - confidence[inside].mean())
        ece += inside.sum() / len(confidence) * gap
        mce = max(mce, gap)
    return float(ece), float(mce)


@pytest.mark.parametrize("m", [1, 10, 15, 37])
def test_ece_and_mce_equal_the_written_out_formula(m: int) -> None:
    confidence, correct = _predictions()
    bins = calibration.reliability(confidence.tolist(), correct.tolist(), m)
    ece, mce = _ece_mce(confidence, correct, m)
    assert bins.ece() == pytest.approx(ece, abs=1e-12)
    assert bins.mce() == pytest.approx(mce, abs=1e-12)
    assert bins.total == len(confidence) and len(bins.counts) == m


@pytest.mark.parametrize("m", [5, 10, 15])
def test_bins_are_sklearn_calibration_curve_uniform(m: int) -> None:
    sk_calibration = pytest.importorskip("sklearn.calibration")
    confidence, correct = _predictions(seed=m)
    prob_true, prob_pred = sk_calibration.calibration_curve(correct, confidence, n_bins=m,
                                                            strategy="uniform")
    bins = calibration.reliability(torch.tensor(confidence), torch.tensor(correct), m)
    full = [i for i, n in enumerate(bins.counts) if n]  # sklearn leaves empty bins out
    np.testing.assert_allclose([bins.accuracy[i] for i in full], prob_true, atol=1e-12)
    np.testing.assert_allclose([bins.confidence[i] for i in full], prob_pred, atol=1e-12)


def test_an_edge_goes_to_the_lower_bin_and_zero_to_the_first() -> None:
    bins = calibration.reliability([0.0, 0.5, 0.5000001, 1.0], [1, 1, 0, 0], 2)
    assert bins.counts == [2, 2]
    assert bins.accuracy == [1.0, 0.0]
    rows = calibration.reliability([0.9], [1], 4).rows()
    assert [r["count"] for r in rows] == [0, 0, 0, 1]
    assert rows[0]["confidence"] is None and rows[3]["accuracy"] == 1.0  # JSON: no NaN


def test_perfectly_calibrated_bins_have_zero_error() -> None:
    confidence = [0.25] * 4 + [0.75] * 4
    correct = [1, 0, 0, 0] + [1, 1, 1, 0]
    bins = calibration.reliability(confidence, correct, 10)
    assert bins.ece() == 0.0 and bins.mce() == 0.0


def test_brier_is_the_multiclass_formula_and_twice_sklearn_for_two_classes() -> None:
    sk_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    probs = rng.dirichlet([1.0, 1.0, 1.0], 200)
    targets = rng.integers(0, 3, 200)
    expected = np.mean([sum((probs[i, c] - (targets[i] == c)) ** 2 for c in range(3))
                        for i in range(200)])
    assert calibration.brier_score(probs, targets) == pytest.approx(expected, abs=1e-12)
    two = rng.dirichlet([1.0, 1.0], 200)
    binary = rng.integers(0, 2, 200)
    assert calibration.brier_score(two, binary) == pytest.approx(
        2 * sk_metrics.brier_score_loss(binary, two[:, 1]), abs=1e-12)


@pytest.mark.parametrize("bins", [0, -3, 2.5, True])
def test_bad_bins_are_refused_naming_the_value(bins) -> None:
    with pytest.raises(ValueError, match=f"--bins must be a positive integer.*got {bins!r}"):
        calibration.reliability([0.5], [1], bins)


def test_bad_confidences_are_refused() -> None:
    with pytest.raises(ValueError, match=r"confidence 1\.5 \(item 1\) is not in \[0, 1\]"):
        calibration.reliability([0.2, 1.5], [1, 0], 10)
    with pytest.raises(ValueError, match="as many confidences as outcomes"):
        calibration.reliability([0.2, 0.3], [1], 10)
    with pytest.raises(ValueError, match="at least one"):
        calibration.reliability([], [], 10)


def test_labelled_predictions_match_sklearn(tmp_path) -> None:
    sk_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    labels = ["cat", "dog", "eel", "fox"]
    probs = torch.tensor(rng.dirichlet([0.5] * 4, 300), dtype=torch.float32)
    truth = [labels[i] if rng.uniform() < 0.6 else labels[rng.integers(0, 4)]
             for i in probs.argmax(-1).tolist()]
    parts = labelled_predictions(truth, probs, labels, 10)
    predicted = [labels[i] for i in probs.argmax(-1).tolist()]
    got = parts.metrics
    assert got["confusion_matrix"] == sk_metrics.confusion_matrix(
        truth, predicted, labels=labels).tolist()
    p, r, f, s = sk_metrics.precision_recall_fscore_support(truth, predicted, labels=labels,
                                                            zero_division=0)
    for i, label in enumerate(labels):
        row = got["per_class"][label]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((p[i], r[i], f[i]))
        assert row["support"] == s[i]
    for average in ("macro", "micro", "weighted"):
        expected = sk_metrics.precision_recall_fscore_support(
            truth, predicted, labels=labels, average=average, zero_division=0)[:3]
        got_average = got[average]
        assert (got_average["precision"], got_average["recall"],
                got_average["f1"]) == pytest.approx(expected)
    assert got["accuracy"] == pytest.approx(sk_metrics.accuracy_score(truth, predicted))
    confidence = probs.double().max(-1).values.numpy()
    correct = np.array([t == q for t, q in zip(truth, predicted, strict=True)], dtype=float)
    ece, mce = _ece_mce(confidence, correct, 10)
    assert got["ece"] == pytest.approx(ece, abs=1e-6)
    assert got["mce"] == pytest.approx(mce, abs=1e-6)
    report = Report("classify", got, tables=parts.tables, figures=parts.figures)
    names = [path.name for path in report.write(tmp_path)]
    assert names == ["report.json", "report.md", "confusion_matrix.png", "reliability.png"]
    text = (tmp_path / "report.md").read_text()
    assert "| true / predicted | cat | dog | eel | fox |" in text
    assert "## Per label" in text and "## Averages" in text and "## Calibration" in text
    assert "![Reliability diagram](reliability.png)" in text
