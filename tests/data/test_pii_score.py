"""Span-level precision/recall per type against a case counted by hand."""

from __future__ import annotations

import pytest

from zenlm.data.pii_score import score_spans, total


def test_scores_match_hand_count():
    # text 0: gold EMAIL 0-10, PHONE 20-30; predicted EMAIL 0-10 (exact), PHONE 21-30 (overlap)
    # text 1: gold PHONE 5-15; predicted CARD 40-56 (false), PHONE 100-110 (false)
    # text 2: gold IP 0-7, predicted nothing
    gold = [[(0, 10, "EMAIL"), (20, 30, "PHONE")], [(5, 15, "PHONE")], [(0, 7, "IP")]]
    pred = [[(0, 10, "EMAIL"), (21, 30, "PHONE")], [(40, 56, "CARD"), (100, 110, "PHONE")], []]
    exact = score_spans(gold, pred, "exact")
    # EMAIL: 1/1 predicted right, 1/1 found. PHONE: 0/2 right, 0/2 found. CARD: 0/1, no gold.
    assert (exact["EMAIL"].precision, exact["EMAIL"].recall) == (1.0, 1.0)
    assert (exact["PHONE"].precision, exact["PHONE"].recall) == (0.0, 0.0)
    assert (exact["CARD"].precision, exact["CARD"].recall) == (0.0, None)
    assert (exact["IP"].precision, exact["IP"].recall) == (None, 0.0)
    overlap = score_spans(gold, pred, "overlap")
    # PHONE 21-30 overlaps 20-30: 1 of 2 predictions right, 1 of 2 gold found.
    assert (overlap["PHONE"].precision, overlap["PHONE"].recall) == (0.5, 0.5)
    pooled = total(overlap)  # 4 predicted, 2 right; 4 gold, 2 found
    assert (pooled.precision, pooled.recall) == (2 / 4, 2 / 4)
    assert (total(exact).precision, total(exact).recall) == (1 / 4, 1 / 4)


def test_type_must_match_and_inputs_are_checked():
    assert score_spans([[(0, 5, "ID")]], [[(0, 5, "CARD")]])["ID"].recall == 0.0
    with pytest.raises(ValueError, match="2 gold texts but 1 predicted"):
        score_spans([[], []], [[]])
    with pytest.raises(ValueError, match="match='fuzzy'"):
        score_spans([[]], [[]], "fuzzy")  # type: ignore[arg-type]
