"""`zenlm evaluate --task multiple-choice` against transformers and lm-eval; bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zenlm.eval.choice import mean_stderr
from zenlm.eval.choice_data import contexts, read_items

N_ITEMS = 8


def _zenlm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zenlm", *args], capture_output=True,
                          text=True, timeout=600)


def _reference_loglik(model, tokenizer, context: str, continuation: str) -> float:
    """lm-eval's recipe, written out on transformers: trailing spaces of the context move to
    the continuation; the continuation's tokens are those of context + continuation past
    the context's; one forward of the tokens but the last; log-softmax in float64."""
    stripped = context.rstrip()
    continuation = context[len(stripped):] + continuation
    context_ids = tokenizer(stripped).input_ids
    whole = tokenizer(stripped + continuation).input_ids
    cont = whole[len(context_ids):]
    with torch.no_grad():
        logits = model(torch.tensor([context_ids + cont[:-1]])).logits[0, -len(cont):]
    logp = torch.log_softmax(logits.double(), -1)
    return float(logp[torch.arange(len(cont)), torch.tensor(cont)].sum())


def test_piqa_through_the_cli_equals_transformers(shared_data, smollm2_gguf, hf_smollm2,
                                                  tmp_path):
    piqa = shared_data / "piqa"
    predictions = tmp_path / "pred.jsonl"
    out = _zenlm("evaluate", "--task", "multiple-choice", "--model", str(smollm2_gguf),
                 "--data", str(piqa / "piqa_dev.jsonl"), "--labels",
                 str(piqa / "piqa_dev-labels.lst"), "--limit", str(N_ITEMS), "--batch-size", "5",
                 "--predictions", str(predictions), "--report", str(tmp_path / "report"),
                 "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert len(rows) == report["n"] == N_ITEMS
    model, tokenizer = hf_smollm2
    items = [json.loads(line) for line in
             (piqa / "piqa_dev.jsonl").read_text().splitlines()[:N_ITEMS]]
    labels = [int(x) for x in (piqa / "piqa_dev-labels.lst").read_text().split()[:N_ITEMS]]
    acc = acc_norm = 0
    for item, label, row in zip(items, labels, rows, strict=True):
        prompt = f"Question: {item['goal']}\nAnswer:"
        choices = [item["sol1"], item["sol2"]]
        expected = [_reference_loglik(model, tokenizer, prompt, " " + c) for c in choices]
        assert row["loglik"] == pytest.approx(expected, abs=1e-3)
        pred = max(range(2), key=lambda j: expected[j])
        pred_norm = max(range(2), key=lambda j: expected[j] / len(choices[j]))
        assert (row["pred"], row["pred_norm"], row["label"]) == (pred, pred_norm, label)
        acc, acc_norm = acc + (pred == label), acc_norm + (pred_norm == label)
    assert report["acc"] == pytest.approx(acc / N_ITEMS)
    assert report["acc_norm"] == pytest.approx(acc_norm / N_ITEMS)
    assert report["settings"]["template"] == "Question: {goal}\\nAnswer:"
    assert (tmp_path / "report" / "margin.png").stat().st_size > 0
    assert "items/s" in out.stderr


def test_stderr_is_the_sample_standard_error():
    values = [1, 0, 1, 1, 0, 1, 0, 1]
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    assert mean_stderr(values) == pytest.approx(math.sqrt(variance / len(values)))


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _piqa_line(goal: str, label: int | None = None) -> str:
    item = {"goal": goal, "sol1": f"{goal} one", "sol2": f"{goal} two"}
    if label is not None:
        item["label"] = label
    return json.dumps(item)


def test_few_shot_examples_are_lm_evals_draws(tmp_path):
    """lm-eval's own ContextSampler (seeded, the item excluded) picks the same examples."""
    samplers = pytest.importorskip("lm_eval.api.samplers")
    data = _write(tmp_path / "d.jsonl", [_piqa_line(f"goal {i}", i % 2) for i in range(12)])
    items = read_items(data)
    prompts = contexts(items, "Question: {goal}\nAnswer:", shots=3, seed=1234)
    docs = [json.loads(line) for line in data.read_text().splitlines()]
    sampler = samplers.ContextSampler(docs, rnd=1234)
    for doc, prompt in zip(docs, prompts, strict=True):
        shots = sampler.sample(3, eval_doc=doc)
        expected = "".join(f"Question: {d['goal']}\nAnswer: {d['sol' + str(d['label'] + 1)]}\n\n"
                           for d in shots) + f"Question: {doc['goal']}\nAnswer:"
        assert prompt == expected
        assert f"Question: {doc['goal']}\n" not in prompt[:-len(doc["goal"]) - 18]


def test_generic_format_and_labels_file(tmp_path):
    data = _write(tmp_path / "g.jsonl", [
        json.dumps({"context": "2 + 2 =", "choices": ["3", "4", "5"], "label": 1}),
        "",  # blank lines are skipped
        json.dumps({"context": "Sky:", "choices": ["blue", "green"], "label": 0}),
    ])
    items = read_items(data)
    assert [(i.choices, i.label, i.line) for i in items] == [
        (("3", "4", "5"), 1, 1), (("blue", "green"), 0, 3)]
    labels = _write(tmp_path / "l.lst", ["0", "1"])
    piqa = _write(tmp_path / "p.jsonl", [_piqa_line("a"), _piqa_line("b")])
    assert [i.label for i in read_items(piqa, labels)] == [0, 1]


@pytest.mark.parametrize(("lines", "labels", "message"), [
    (['{"goal": "a", "sol1": "x", "sol2": "y", "label": 0}', '{"goal": "b", "sol1": '],
     None, r"d.jsonl:2: not valid JSON"),
    ([_piqa_line("a", 0), _piqa_line("b", 2)], None,
     r"d.jsonl:2: label 2 is outside the choices: valid labels are 0..1"),
    ([json.dumps({"context": "c", "choices": ["x", " "], "label": 0})], None,
     r"d.jsonl:1: choice 1 is empty \(' '\)"),
    ([_piqa_line("a"), _piqa_line("b")], ["0"],
     r"l.lst: 1 labels for the 2 items of .*d.jsonl"),
    ([_piqa_line("a")], None, r"d.jsonl:1: no 'label' in the line; .*--labels"),
    ([_piqa_line("a")], ["yes"], r"l.lst:1: label 'yes' is not an integer"),
    ([json.dumps({"question": "q", "answers": ["x", "y"]})], None,
     r"d.jsonl:1: expected PIQA's keys \['goal', 'sol1', 'sol2'\] or the generic"),
])
def test_bad_input_names_file_line_and_value(tmp_path, lines, labels, message):
    data = _write(tmp_path / "d.jsonl", lines)
    label_file = _write(tmp_path / "l.lst", labels) if labels is not None else None
    with pytest.raises(ValueError, match=message):
        read_items(data, label_file)


def test_bad_options_are_named(tmp_path):
    items = read_items(_write(tmp_path / "d.jsonl", [_piqa_line("a", 0), _piqa_line("b", 1)]))
    with pytest.raises(ValueError, match=r"field\(s\) \['question'\] are not in the item at "
                                         r"line 1; its fields are \['goal', 'label'"):
        contexts(items, "{question}")
    with pytest.raises(ValueError, match="--shots 2 needs more than 2 items; the file has 2"):
        contexts(items, "{goal}", shots=2)


def test_cli_reports_bad_data_before_loading_a_model(tmp_path):
    data = _write(tmp_path / "d.jsonl", [_piqa_line("a", 0), _piqa_line("b", 5)])
    out = _zenlm("evaluate", "--task", "multiple-choice", "--model", "no-such-model",
                 "--data", str(data))
    assert out.returncode == 2
    assert "d.jsonl:2: label 5 is outside the choices: valid labels are 0..1" in out.stderr
