"""`zenlm finetune` -> `evaluate --json` -> `predict` for ner and qa (MiniLM, a few steps).

Each task's evaluation is recomputed from its `predict` output by an independent
scorer: seqeval for entities, the official SQuAD v1.1 normalisation written out here.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter

import pytest

from zenlm.cli import main
from zenlm.tasks import load_task

PEOPLE = ["John", "Mary", "Ahmed", "Li", "Olga", "Pedro"]
CITIES = ["Paris", "Berlin", "Lagos", "Lima", "Oslo"]


def _finetune(task: str, model, train, out, *extra: str) -> None:
    assert main(["finetune", "--task", task, "--model", str(model), "--train", str(train),
                 "--output", str(out), "--batch-size", "8", *extra]) == 0


def _evaluate_and_predict(task: str, model_dir, data, predictions, capsys) -> tuple[dict, list]:
    """evaluate --json --report (next to `predictions`), then predict; the report is checked."""
    capsys.readouterr()
    report = predictions.parent / "report"
    assert main(["evaluate", "--task", task, "--model", str(model_dir), "--data", str(data),
                 "--json", "--report", str(report)]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert json.loads((report / "report.json").read_text()) == scores
    assert main(["predict", "--task", task, "--model", str(model_dir), "--input", str(data),
                 "--output", str(predictions)]) == 0
    return scores, [json.loads(line) for line in predictions.read_text().splitlines()]


def test_ner_scores_are_seqeval_of_the_predictions(minilm_folder, tmp_path, capsys):
    seqeval = pytest.importorskip("seqeval.metrics")
    lines, gold = [], []
    for i in range(40):
        person, city = PEOPLE[i % len(PEOPLE)], CITIES[i % len(CITIES)]
        words = [person, "lives", "in", city, "now"]
        tags = ["B-PER", "O", "O", "B-LOC", "O"]
        lines += [f"{w} NN O {t}" for w, t in zip(words, tags, strict=True)] + [""]
        gold.append(tags)
    data = tmp_path / "train.conll"
    data.write_text("\n".join(lines))
    _finetune("ner", minilm_folder, data, tmp_path / "run", "--max-steps", "12", "--lr", "1e-2",
              "--lora")
    scores, records = _evaluate_and_predict("ner", tmp_path / "run" / "model", data,
                                            tmp_path / "predictions.jsonl", capsys)
    predicted = [r["tags"] for r in records]
    assert [r["tokens"][0] for r in records] == [PEOPLE[i % len(PEOPLE)] for i in range(40)]
    assert scores["n"] == len(predicted) == 40
    assert scores["f1"] == pytest.approx(seqeval.f1_score(gold, predicted))
    assert scores["precision"] == pytest.approx(seqeval.precision_score(gold, predicted))
    assert scores["f1"] > 0.5  # it learned which words are names
    # in memory, from words or from a text split at whitespace: the CLI's records
    tagger = load_task(tmp_path / "run" / "model")
    assert tagger.predict([r["tokens"] for r in records[:3]]) == records[:3]
    assert tagger(" ".join(records[0]["tokens"])) == records[0]
    _check_ner_report(scores, gold, predicted, tmp_path / "report")


def _check_ner_report(scores: dict, gold: list, predicted: list, report) -> None:
    """Per-type entity scores (seqeval), tag confusion (scikit-learn), calibration bins."""
    seqeval = pytest.importorskip("seqeval.metrics")
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    by_type = seqeval.classification_report(gold, predicted, output_dict=True)
    for kind, row in scores["per_type"].items():
        assert [row["precision"], row["recall"], row["f1"]] == pytest.approx(
            [by_type[kind]["precision"], by_type[kind]["recall"], by_type[kind]["f1-score"]])
    flat_gold = [t for row in gold for t in row]
    flat_pred = [t for row in predicted for t in row]
    assert scores["tags"] == ["O", "B-LOC", "B-PER"] and scores["words"] == len(flat_gold)
    assert scores["tag_confusion_matrix"] == sklearn_metrics.confusion_matrix(
        flat_gold, flat_pred, labels=scores["tags"]).tolist()
    assert scores["tag_accuracy"] == pytest.approx(
        sklearn_metrics.accuracy_score(flat_gold, flat_pred))
    bins = scores["calibration"]["reliability"]
    assert len(bins) == 15 and sum(b["count"] for b in bins) == len(flat_gold)
    # the bins' accuracies, weighted by their counts, are the tag accuracy
    right = sum(b["count"] * b["accuracy"] for b in bins if b["count"])
    assert right / len(flat_gold) == pytest.approx(scores["tag_accuracy"])
    assert 0.0 <= scores["ece"] <= scores["mce"] <= 1.0
    assert sorted(p.name for p in report.iterdir()) == [
        "reliability.png", "report.json", "report.md", "tag_confusion_matrix.png"]
    text = (report / "report.md").read_text()
    for part in ("| f1 |", "| tag_accuracy |", "| ece |", "## Per entity type", "| PER |",
                 "## Per word: confusion matrix", "| true / predicted | O | B-LOC | B-PER |",
                 "## Per word: calibration", "(tag_confusion_matrix.png)", "(reliability.png)"):
        assert part in text


def _normalize(text: str) -> str:
    """SQuAD v1.1's official answer normalisation."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def _token_f1(prediction: str, truth: str) -> float:
    guess, gold = _normalize(prediction).split(), _normalize(truth).split()
    same = sum((Counter(guess) & Counter(gold)).values())
    if not same:
        return 0.0
    precision, recall = same / len(guess), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def test_qa_scores_are_squad_scores_of_the_predictions(minilm_folder, tmp_path, capsys):
    articles, truth, questions = [], {}, {}
    for a in range(4):
        paragraphs = []
        for i in range(6):
            person, city = PEOPLE[(a + i) % len(PEOPLE)], CITIES[(a * 2 + i) % len(CITIES)]
            context = (f"In the story number {a}{i}, {person} travelled by train to {city} "
                       f"and stayed there for a long winter with old friends.")
            qid = f"q{a}-{i}"
            truth[qid] = [city]
            paragraphs.append({"context": context, "qas": [{
                "id": qid, "question": questions.setdefault(qid, f"Where did {person} travel to?"),
                "answers": [{"text": city, "answer_start": context.index(city)}]}]})
        articles.append({"title": f"article {a}", "paragraphs": paragraphs})
    data = tmp_path / "train.json"
    data.write_text(json.dumps({"data": articles}))
    # Windows of 32 tokens with an overlap of 8: every context is cut into several windows.
    _finetune("qa", minilm_folder, data, tmp_path / "run", "--max-steps", "4",
              "--max-length", "32", "--stride", "8", "--lr", "1e-3")
    scores, records = _evaluate_and_predict("qa", tmp_path / "run" / "model", data,
                                            tmp_path / "predictions.jsonl", capsys)
    answers = {r["id"]: r["answer"] for r in records}
    assert sorted(answers) == sorted(truth) and scores["n"] == 24
    contexts = {q["id"]: p["context"] for art in articles for p in art["paragraphs"]
                for q in p["qas"]}
    assert all(answers[qid] in contexts[qid] for qid in answers)  # extracted spans
    exact = 100 * sum(_normalize(answers[q]) == _normalize(truth[q][0]) for q in truth) / 24
    f1 = 100 * sum(_token_f1(answers[q], truth[q][0]) for q in truth) / 24
    assert scores["exact_match"] == pytest.approx(exact)
    assert scores["f1"] == pytest.approx(f1)
    # in memory: the same answers, with character offsets into the context and a score
    reader = load_task(tmp_path / "run" / "model")
    found = reader.predict([{"id": qid, "question": question, "context": contexts[qid]}
                            for qid, question in questions.items()])
    assert {r["id"]: r["answer"] for r in found} == answers
    for record in found:
        assert contexts[record["id"]][record["start"]:record["end"]] == record["answer"]
        assert isinstance(record["score"], float)
    with pytest.raises(ValueError, match="'question' and 'context'"):
        reader({"question": "Where?"})
    _check_qa_report(scores, answers, truth, tmp_path / "report")


def _check_qa_report(scores: dict, answers: dict, truth: dict, report) -> None:
    """Calibration bins against exact match, F1 bands, files and Markdown."""
    bins = scores["calibration"]["reliability"]
    assert len(bins) == 15 and sum(b["count"] for b in bins) == len(truth)
    # the bins' exact-match rates, weighted by their counts, are the exact match
    right = sum(b["count"] * b["accuracy"] for b in bins if b["count"])
    assert 100 * right / len(truth) == pytest.approx(scores["exact_match"])
    assert 0.0 <= scores["mean_confidence"] <= 1.0 and 0.0 <= scores["ece"] <= scores["mce"]
    f1s = [_token_f1(answers[q], truth[q][0]) for q in truth]
    assert scores["f1_bands"] == {
        "wrong (F1 0)": sum(f == 0 for f in f1s), "partial, F1 < 0.5": sum(0 < f < 0.5 for f in f1s),
        "partial, F1 >= 0.5": sum(0.5 <= f < 1 for f in f1s),
        "right (F1 1)": sum(f == 1 for f in f1s)}
    assert sorted(p.name for p in report.iterdir()) == [
        "f1_histogram.png", "reliability.png", "report.json", "report.md"]
    text = (report / "report.md").read_text()
    for part in ("| exact_match |", "| f1 |", "| ece |", "## Answers by F1", "## Calibration",
                 "(f1_histogram.png)", "(reliability.png)"):
        assert part in text
