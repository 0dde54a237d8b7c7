"""`zenlm finetune` -> `evaluate --json` -> `predict` end to end (a few steps, MiniLM + LoRA)."""

from __future__ import annotations

import json

from zenlm.cli import main


def test_finetune_evaluate_predict_classify(minilm_folder, tmp_path, capsys):
    rows = ["sentence\tlabel"] + [f"a {'good' if i % 2 else 'bad'} film number {i}\t{i % 2}"
                                  for i in range(40)]
    data = tmp_path / "train.tsv"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    assert main(["finetune", "--task", "classify", "--model", str(minilm_folder), "--train",
                 str(data), "--output", str(out), "--max-steps", "3", "--batch-size", "8",
                 "--lora", "--lora-targets", "q,v", "--freeze-layers", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 3 and summary["val_examples"] == 4
    model_dir = out / "model"
    assert (model_dir / "adapter.safetensors").is_file()
    assert main(["evaluate", "--task", "classify", "--model", str(model_dir), "--data", str(data),
                 "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert 0.0 <= scores["accuracy"] <= 1.0 and scores["n"] == 40
    assert main(["predict", "--task", "classify", "--model", str(model_dir), "--input",
                 str(data)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 40 and records[0]["label"] in ("0", "1")


def test_bad_label_in_evaluation_file_is_a_clear_error(minilm_folder, tmp_path, capsys):
    data = tmp_path / "train.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"x {i}\t{i % 2}\n" for i in range(12)))
    out = tmp_path / "run"
    assert main(["finetune", "--task", "classify", "--model", str(minilm_folder), "--train",
                 str(data), "--output", str(out), "--max-steps", "1", "--batch-size", "4"]) == 0
    capsys.readouterr()
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\tlabel\nfine\t1\nodd\t7\n")
    assert main(["evaluate", "--task", "classify", "--model", str(out / "model"), "--data",
                 str(bad)]) == 2
    assert "bad.tsv:3: label '7' is not in the label set" in capsys.readouterr().err
