"""`zenlm finetune` -> `evaluate --json` -> `predict` end to end (a few steps, MiniLM + LoRA)."""

from __future__ import annotations

import json

import pytest

from zenlm.cli import main


@pytest.fixture(scope="module")
def run(minilm_folder, tmp_path_factory):
    """(training file, fine-tuned model folder, finetune's printed summary)."""
    tmp_path = tmp_path_factory.mktemp("finetune")
    rows = ["sentence\tlabel"] + [f"a {'good' if i % 2 else 'bad'} film number {i}\t{i % 2}"
                                  for i in range(40)]
    data = tmp_path / "train.tsv"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    capture = pytest.MonkeyPatch()
    lines: list[str] = []
    capture.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(map(str, a))))
    try:
        code = main(["finetune", "--task", "classify", "--model", str(minilm_folder), "--train",
                     str(data), "--output", str(out), "--max-steps", "3", "--batch-size", "8",
                     "--lora", "--lora-targets", "q,v", "--freeze-layers", "2"])
    finally:
        capture.undo()
    assert code == 0
    return data, out / "model", json.loads("\n".join(lines))


def test_finetune_evaluate_predict_classify(run, capsys):
    data, model_dir, summary = run
    assert summary["steps"] == 3 and summary["val_examples"] == 4
    assert (model_dir / "adapter.safetensors").is_file()
    assert main(["evaluate", "--task", "classify", "--model", str(model_dir), "--data", str(data),
                 "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert 0.0 <= scores["accuracy"] <= 1.0 and scores["n"] == 40
    assert main(["predict", "--task", "classify", "--model", str(model_dir), "--input",
                 str(data)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 40 and records[0]["label"] in ("0", "1")


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
