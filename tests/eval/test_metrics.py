"""Metrics against independent oracles: scikit-learn, seqeval, and known SQuAD values."""

from __future__ import annotations

import random

import pytest

from zenlm.eval.metrics import (
    accuracy,
    confusion_matrix,
    entity_f1,
    get_entities,
    normalize_answer,
    plot_confusion_matrix,
    precision_recall_f1,
    squad_scores,
)


def _random_labels(n=300, k=4, seed=0):
    rng = random.Random(seed)
    truth = [rng.randrange(k) for _ in range(n)]
    pred = [t if rng.random() < 0.6 else rng.randrange(k) for t in truth]
    return truth, pred


def test_prf_matches_sklearn():
    sklearn = pytest.importorskip("sklearn.metrics")
    truth, pred = _random_labels()
    ours = precision_recall_f1(truth, pred, labels=[0, 1, 2, 3])
    assert ours["macro"]["f1"] == pytest.approx(sklearn.f1_score(truth, pred, average="macro"))
    assert ours["micro"]["f1"] == pytest.approx(sklearn.f1_score(truth, pred, average="micro"))
    p, r, f, s = sklearn.precision_recall_fscore_support(truth, pred, labels=[0, 1, 2, 3])
    for i in range(4):
        assert ours["per_class"][i]["precision"] == pytest.approx(p[i])
        assert ours["per_class"][i]["recall"] == pytest.approx(r[i])
        assert ours["per_class"][i]["support"] == s[i]
    assert accuracy(truth, pred) == pytest.approx(sklearn.accuracy_score(truth, pred))
    assert confusion_matrix(truth, pred, [0, 1, 2, 3]) == sklearn.confusion_matrix(
        truth, pred, labels=[0, 1, 2, 3]).tolist()


def test_confusion_matrix_plot(tmp_path):
    path = plot_confusion_matrix([[5, 1], [2, 7]], ["neg", "pos"], tmp_path / "cm.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _random_tags(rng, n):
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    return [rng.choice(tags) for _ in range(n)]


def test_entity_f1_matches_seqeval_on_random_and_broken_sequences():
    seqeval = pytest.importorskip("seqeval.metrics")
    rng = random.Random(1)
    truth = [_random_tags(rng, rng.randint(1, 12)) for _ in range(200)]
    pred = [[t if rng.random() < 0.7 else rng.choice(["O", "I-PER", "B-LOC", "I-LOC"])
             for t in row] for row in truth]
    ours = entity_f1(truth, pred)
    assert ours["f1"] == pytest.approx(seqeval.f1_score(truth, pred))
    assert ours["precision"] == pytest.approx(seqeval.precision_score(truth, pred))
    assert ours["recall"] == pytest.approx(seqeval.recall_score(truth, pred))
    report = seqeval.classification_report(truth, pred, output_dict=True)
    assert ours["per_type"]["PER"]["f1"] == pytest.approx(report["PER"]["f1-score"])


def test_get_entities_known():
    assert get_entities(["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-PER"]) == [
        ("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 4), ("PER", 5, 5)]


def test_squad_official_normalisation_and_scores():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("an apple a day") == "apple day"
    preds = {"1": "the Eiffel Tower", "2": "in Paris France", "3": "nothing"}
    refs = {"1": ["Eiffel Tower"], "2": ["Paris", "Paris, France"], "3": ["x"], "4": ["y"]}
    scores = squad_scores(preds, refs)
    # q1 exact; q2 F1 = max(2*(1/3*1)/(1/3+1), 2*(2/3*1)/(2/3+1)) = 0.8; q3, q4 zero.
    assert scores["exact_match"] == pytest.approx(25.0)
    assert scores["f1"] == pytest.approx(100 * (1 + 0.8) / 4)
