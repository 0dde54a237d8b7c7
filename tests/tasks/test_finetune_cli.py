"""`zenlm finetune` -> `evaluate --json` -> `predict` end to end (a few steps, MiniLM + LoRA)."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest

from zenlm.cli import main
from zenlm.tasks import load_task

STEPS = "12"


@pytest.fixture(scope="module")
def run(minilm_folder, tmp_path_factory):
    """(training file, fine-tuned model folder, finetune's printed summary)."""
    tmp_path = tmp_path_factory.mktemp("finetune")
    # One word separates the classes; 3:2 so the majority baseline is not a coin toss.
    rows = ["sentence\tlabel"] + [f"a {'good' if i % 5 < 2 else 'bad'} film number {i}\t"
                                  f"{int(i % 5 < 2)}" for i in range(40)]
    data = tmp_path / "train.tsv"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    capture = pytest.MonkeyPatch()
    lines: list[str] = []
    capture.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(map(str, a))))
    try:
        code = main(["finetune", "--task", "classify", "--model", str(minilm_folder), "--train",
                     str(data), "--output", str(out), "--max-steps", STEPS, "--batch-size", "8",
                     "--lr", "3e-3", "--head-lr", "1.5e-2",
                     "--lora", "--lora-targets", "q,v", "--freeze-layers", "2",
                     "--dropout", "0.1"])
    finally:
        capture.undo()
    assert code == 0
    return data, out / "model", json.loads("\n".join(lines))


def test_finetune_evaluate_predict_classify(run, tmp_path, capsys):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    data, model_dir, summary = run
    assert summary["steps"] == int(STEPS) and summary["val_examples"] == 4
    assert summary["settings"]["dropout"] == 0.1  # --dropout, recorded with the settings
    assert (model_dir / "adapter.safetensors").is_file()
    # --head-lr 1.5e-2 over --lr 3e-3: the head's weight and bias step 5x the others
    optimizer = json.loads(next(model_dir.parent.glob("run/checkpoints/*/optimizer.json"))
                           .read_text())
    scales = sorted((group["lr_scale"], len(group["params"]))
                    for group in optimizer["param_groups"])
    assert scales[-2:] == [(5.0, 1), (5.0, 1)] and {s for s, _ in scales[:-2]} == {1.0}
    assert main(["evaluate", "--task", "classify", "--model", str(model_dir), "--data", str(data),
                 "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    predictions = tmp_path / "predictions.jsonl"
    assert main(["predict", "--task", "classify", "--model", str(model_dir), "--input",
                 str(data), "--output", str(predictions)]) == 0
    records = [json.loads(line) for line in predictions.read_text().splitlines()]
    truth = [line.rsplit("\t", 1)[1] for line in data.read_text().splitlines()[1:]]
    predicted = [r["label"] for r in records]
    assert scores["n"] == len(records) == 40
    # evaluate's numbers are those of predict's labels, recomputed by scikit-learn
    assert scores["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(truth, predicted))
    assert scores["confusion_matrix"] == sklearn_metrics.confusion_matrix(
        truth, predicted, labels=["0", "1"]).tolist()
    assert scores["f1"] == pytest.approx(sklearn_metrics.f1_score(truth, predicted,
                                                                  average="macro"))
    # and the model learned: it beats always answering the majority class (0.6) by far
    assert max(Counter(truth).values()) / len(truth) == 0.6
    assert scores["accuracy"] >= 0.9
    # a program's in-memory predictions are the CLI's, record for record
    texts = [line.rsplit("\t", 1)[0] for line in data.read_text().splitlines()[1:]]
    classifier = load_task(model_dir)
    assert classifier.task == "classify" and classifier.labels == ["0", "1"]
    assert classifier.predict(texts) == records
    assert classifier(texts[0]) == records[0]
    with pytest.raises(ValueError, match="task 'classify' predicts on a text"):
        classifier.predict([3])


def test_head_lr_must_be_positive(run, tmp_path, capsys):
    data, _, _ = run
    assert main(["finetune", "--task", "classify", "--model", "unused", "--train", str(data),
                 "--output", str(tmp_path), "--head-lr", "0"]) == 2
    assert "--head-lr must be > 0, got 0.0" in capsys.readouterr().err


def test_dropout_must_be_a_rate(run, tmp_path, capsys):
    data, _, _ = run
    assert main(["finetune", "--task", "classify", "--model", "unused", "--train", str(data),
                 "--output", str(tmp_path), "--dropout", "1"]) == 2
    assert "--dropout 1.0 is not a dropout rate; give one in [0, 1)" in capsys.readouterr().err


def test_bad_label_in_evaluation_file_is_a_clear_error(run, tmp_path, capsys):
    _, model_dir, _ = run
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\tlabel\nfine\t1\nodd\t7\n")
    assert main(["evaluate", "--task", "classify", "--model", str(model_dir), "--data",
                 str(bad)]) == 2
    assert "bad.tsv:3: label '7' is not in the label set" in capsys.readouterr().err
    assert main(["evaluate", "--task", "ner", "--model", str(model_dir), "--data",
                 str(bad)]) == 2
    assert "fine-tuned for --task classify" in capsys.readouterr().err


def test_model_folder_with_a_first_layout_task_json_still_evaluates(run, tmp_path, capsys):
    data, model_dir, _ = run
    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    info = json.loads((old / "task.json").read_text())
    # What finetune wrote before TaskInfo: these keys only, no "format".
    keys = ("task", "labels", "max_length", "stride", "pooling", "arch", "base_model")
    (old / "task.json").write_text(json.dumps({k: info[k] for k in keys}))
    runs = []
    for folder in (model_dir, old):
        assert main(["evaluate", "--task", "classify", "--model", str(folder), "--data",
                     str(data), "--json"]) == 0
        scores = json.loads(capsys.readouterr().out)
        assert scores.pop("settings")["model"] == str(folder)
        runs.append(scores)
    assert runs[0] == runs[1]


def _ece(confidence: list[float], correct: list[bool], m: int) -> float:
    """Guo et al. (2017) in float64: bins ((k-1)/M, k/M], sum |B|/N |acc(B) - conf(B)|."""
    total = 0.0
    for k in range(1, m + 1):
        inside = [i for i, c in enumerate(confidence) if (k - 1) / m < c <= k / m]
        if inside:
            accuracy = sum(correct[i] for i in inside) / len(inside)
            mean = sum(confidence[i] for i in inside) / len(inside)
            total += len(inside) / len(confidence) * abs(accuracy - mean)
    return total


def test_evaluate_report_classify(run, tmp_path, capsys):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    data, model_dir, _ = run
    out = tmp_path / "report"
    assert main(["evaluate", "--task", "classify", "--model", str(model_dir), "--data",
                 str(data), "--report", str(out), "--bins", "10",
                 "--plot", str(tmp_path / "cm.svg")]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "confusion_matrix.png", "reliability.png", "report.json", "report.md"]
    assert (out / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "cm.svg").read_text().lstrip().startswith("<?xml")  # --plot still works
    saved = json.loads((out / "report.json").read_text())
    assert {"accuracy", "f1", "weighted_f1", "ece", "mce", "brier", "macro", "micro",
            "weighted", "per_class", "confusion_matrix", "calibration", "n"} <= set(saved)
    assert saved["calibration"]["bins"] == 10 and len(saved["calibration"]["reliability"]) == 10
    # the oracle: predict's probabilities, scored here with scikit-learn and the formulas
    predictions = tmp_path / "predictions.jsonl"
    assert main(["predict", "--task", "classify", "--model", str(model_dir), "--input",
                 str(data), "--output", str(predictions)]) == 0
    records = [json.loads(line) for line in predictions.read_text().splitlines()]
    truth = [line.rsplit("\t", 1)[1] for line in data.read_text().splitlines()[1:]]
    predicted = [r["label"] for r in records]
    confidence = [max(r["probs"].values()) for r in records]
    correct = [t == p for t, p in zip(truth, predicted, strict=True)]
    assert saved["ece"] == pytest.approx(_ece(confidence, correct, 10), abs=1e-5)
    brier = sum(sum((p - (label == t)) ** 2 for label, p in r["probs"].items())
                for r, t in zip(records, truth, strict=True)) / len(records)
    assert saved["brier"] == pytest.approx(brier, abs=1e-5)
    p, r, f, s = sklearn_metrics.precision_recall_fscore_support(truth, predicted,
                                                                labels=["0", "1"],
                                                                zero_division=0)
    for i, label in enumerate(["0", "1"]):
        row = saved["per_class"][label]
        assert [row["precision"], row["recall"], row["f1"]] == pytest.approx([p[i], r[i], f[i]])
        assert row["support"] == s[i]
    assert saved["weighted_f1"] == pytest.approx(
        sklearn_metrics.f1_score(truth, predicted, average="weighted"))
    text = (out / "report.md").read_text()
    for part in ("| accuracy |", "| ece |", "## Per label", "## Averages",
                 "| true / predicted | 0 | 1 |", "## Calibration",
                 "![Reliability diagram](reliability.png)", "(confusion_matrix.png)"):
        assert part in text


def test_evaluate_refuses_zero_bins(run, capsys):
    data, model_dir, _ = run
    capsys.readouterr()
    assert main(["evaluate", "--task", "classify", "--model", str(model_dir), "--data",
                 str(data), "--bins", "0"]) == 2
    assert "--bins must be a positive integer (e.g. 15), got 0" in capsys.readouterr().err


def test_bins_for_a_task_without_calibration_is_refused(tmp_path, capsys):
    missing = str(tmp_path / "no-model")
    assert main(["evaluate", "--task", "translate", "--model", missing, "--source", missing,
                 "--target", missing, "--bins", "5"]) == 2
    assert ("--bins 5: task 'translate' reports no calibration; --bins is for classify, ner, qa"
            in capsys.readouterr().err)
