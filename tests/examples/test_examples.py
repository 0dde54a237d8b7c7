"""Every program in examples/ runs at tiny size, and what it prints is checked."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_example(name: str, data: Path, *args: str, timeout: int = 900) -> str:
    env = {**os.environ, "ZENLM_DATA": str(data)}
    out = subprocess.run([sys.executable, str(REPO / "examples" / name), *args],
                         capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def example_module(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_sampling_prints_n_sequences_and_is_reproducible(smollm2_gguf, tmp_path):
    out = run_example("sampling.py", tmp_path, "--model", str(smollm2_gguf),
                      "--max-new-tokens", "8", "--num-return-sequences", "3")
    sampled = re.findall(r"^\[(\d)\] \((\d+) tokens\) (.*)$", out, re.M)
    assert [n for n, _, _ in sampled] == ["1", "2", "3"]
    assert all(1 <= int(tokens) <= 8 for _, tokens, _ in sampled)
    assert all(text.startswith("Once upon a time") for _, _, text in sampled)
    assert len({text for _, _, text in sampled}) > 1  # temperature 0.8 draws differ
    assert re.search(r"^greedy: Once upon a time", out, re.M)
    assert "same seed, same samples: True" in out


def test_bert_classifier_validates_on_unseen_sentences(shared_data, tmp_path):
    out = run_example("bert_classifier.py", shared_data, "--max-steps", "8",
                      "--val-size", "100", "--out", str(tmp_path))
    rows = list(csv.reader((shared_data / "sst2" / "train.tsv").open(encoding="utf-8"),
                           delimiter="\t"))[1:]
    train, held, dropped = map(int, re.search(
        r"(\d+) to train on, (\d+) held-out sentences \((\d+) training", out).groups())
    assert held == 100 and train + held + dropped == len(rows)
    val_texts = [r[0] for r in csv.reader((tmp_path / "val.tsv").open(encoding="utf-8"),
                                          delimiter="\t")][1:]
    train_texts = [r[0] for r in csv.reader((tmp_path / "train.tsv").open(encoding="utf-8"),
                                            delimiter="\t")][1:]
    joined = [" " + " ".join(v.split()) + " " for v in val_texts]
    # no training phrase is a run of words of a validation sentence
    assert not any(" " + " ".join(t.split()) + " " in v for t in train_texts[::50] for v in joined)
    accuracy = float(re.search(r"accuracy (\d\.\d+)", out)[1])
    assert 0.0 <= accuracy <= 1.0
    predictions = re.findall(r"^([01]) \((\d\.\d\d)\)  (.+)$", out, re.M)
    assert [text for _, _, text in predictions] == example_module("bert_classifier").NEW
    assert all(0.5 <= float(p) <= 1.0 for _, p, _ in predictions)  # the chosen label's prob


def test_encoder_from_scratch_trains_on_chinese_reviews(shared_data, tmp_path):
    out = run_example("encoder_from_scratch.py", shared_data, "--limit", "300", "--max-steps",
                      "10", "--out", str(tmp_path))
    assert re.search(r"encoder from scratch: 0\.\d+M parameters, \d+ WordPiece tokens", out)
    assert re.search(r"validation: accuracy \d\.\d+, macro F1 \d\.\d+ on 30 reviews after 10 "
                     r"steps", out)
    predictions = re.findall(r"^([01]) \((\d\.\d\d)\)  (.+)$", out, re.M)
    assert [text for _, _, text in predictions] == example_module("encoder_from_scratch").NEW
    train = (tmp_path / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    val = (tmp_path / "val.tsv").read_text(encoding="utf-8").splitlines()[1:]
    assert len(train) == 270 and len(val) == 30 and not set(train) & set(val)
    assert {line.rsplit("\t", 1)[1] for line in train} == {"0", "1"}  # a sample of both labels


def test_extractive_qa_answers_with_offsets(shared_data, tmp_path):
    # Tiny size: the first paragraphs of four articles (whole articles hold up to 758
    # questions, and scoring the validation article alone took a minute).
    articles = json.loads((shared_data / "squad" / "train-sample.json").read_text())["data"]
    sample = [{**a, "paragraphs": a["paragraphs"][:4]} for a in articles[:3] + articles[-1:]]
    data = tmp_path / "sample.json"
    data.write_text(json.dumps({"data": sample, "version": "1.1"}))
    out = run_example("extractive_qa.py", shared_data, "--data", str(data), "--max-steps", "4",
                      "--train-articles", "3", "--test-articles", "1", "--out", str(tmp_path))
    held = json.loads((tmp_path / "test.json").read_text())["data"]
    assert [article["title"] for article in held] == [articles[-1]["title"]]
    n_questions = sum(len(p["qas"]) for article in held for p in article["paragraphs"])
    assert re.search(rf"exact match \d+\.\d, F1 \d+\.\d on {n_questions} questions after 4 "
                     r"steps", out)
    context = example_module("extractive_qa").CONTEXT
    answers = re.findall(r"^'(.*)' \[(\d+):(\d+)\] score (-?\d+\.\d\d)$", out, re.M)
    assert len(answers) == 2
    for text, start, end, _ in answers:
        assert context[int(start):int(end)] == text  # offsets index the context's characters


def test_sft_qa_learns_the_facts(smollm2_gguf, tmp_path):
    # Each step sees all six pairs; the training loss was 0.11 at step 8 and 0.007 at 12.
    out = run_example("sft_qa.py", tmp_path, "--model", str(smollm2_gguf), "--max-steps", "12",
                      "--out", str(tmp_path))
    after = re.findall(r"^   after:  (.*)$", out, re.M)
    assert len(after) == 6 + 3
    assert "Tromsø" in after[0] and "Ingrid" in after[1] and "2019" in after[2]
    before = re.findall(r"^   before: (.*)$", out, re.M)
    assert "Ingrid" not in before[1]  # it did not know before


def test_translate_from_scratch(shared_data, tmp_path):
    out = run_example("translate.py", shared_data, "--minutes", "0.1", "--limit", "300",
                      "--val-limit", "10", "--d-model", "64", "--num-beams", "1",
                      "--out", str(tmp_path))
    bleu, chrf = map(float, re.search(r"BLEU (\d+\.\d\d), chrF (\d+\.\d\d)", out).groups())
    assert 0 <= bleu <= 100 and 0 <= chrf <= 100
    assert re.search(r"validation \(10 pairs, beam 1\)", out)
    assert len(re.findall(r"^  -> ", out, re.M)) == 2


def test_summarize_against_lead3(shared_data, tmp_path):
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    out = run_example("summarize.py", shared_data, "--minutes", "0.1", "--limit", "40",
                      "--val-limit", "8", "--out", str(tmp_path))
    val = [json.loads(line) for line in (tmp_path / "val.jsonl").read_text().splitlines()]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    lead = example_module("summarize").lead3
    expected = [scorer.score(r["summary"], lead(r["article"])) for r in val]
    printed = dict(re.findall(r"(rouge\w+) (\d+\.\d\d)", out.split("lead-3:")[1].splitlines()[0]))
    for key, value in printed.items():
        assert float(value) == pytest.approx(
            100 * sum(s[key].fmeasure for s in expected) / len(expected), abs=0.006)
    summary = " ".join(out.split("...:\n", 1)[1].split())
    article = " ".join(val[0]["article"].split())
    sentences = [s for s in re.split(r'(?<=[.!?"])\s+', summary) if s]
    assert sentences and all(s in article for s in sentences)  # extracted, not written
