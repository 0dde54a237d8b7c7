"""`zenlm finetune --label-prompts`: the classify head starts as cosine to a text per label.

Oracle: transformers' BertModel on the same all-MiniLM-L6-v2 folder, mean-pooled as
Sentence-Transformers pools it, and the zero-shot logits written out in float64 here.
"""

from __future__ import annotations

import json

import pytest
import torch

from zenlm.cli import main

PROMPTS = {"0": "a terrible, boring film", "1": "a wonderful, moving film"}
TEXTS = ["a good film number 3", "a bad film number 4", "I loved every minute of it",
         "the plot was dull and the acting worse"]


@pytest.fixture(scope="module")
def zero_shot_run(minilm_folder, tmp_path_factory):
    """(model folder, predictions) of a run whose one step moves no weight (lr 1e-12)."""
    tmp = tmp_path_factory.mktemp("prompts")
    rows = ["sentence\tlabel"] + [f"a {'good' if i % 2 else 'bad'} film number {i}\t{i % 2}"
                                  for i in range(20)]
    (tmp / "train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (tmp / "prompts.json").write_text(json.dumps(PROMPTS), encoding="utf-8")
    (tmp / "texts.tsv").write_text("sentence\n" + "\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp / "run"
    assert main(["finetune", "--task", "classify", "--model", str(minilm_folder),
                 "--train", str(tmp / "train.tsv"), "--output", str(out), "--max-steps", "1",
                 "--batch-size", "4", "--lr", "1e-12", "--label-prompts",
                 str(tmp / "prompts.json")]) == 0
    assert main(["predict", "--task", "classify", "--model", str(out / "model"), "--input",
                 str(tmp / "texts.tsv"), "--output", str(tmp / "predictions.jsonl")]) == 0
    records = [json.loads(line) for line in
               (tmp / "predictions.jsonl").read_text().splitlines()]
    return out / "model", records


def test_head_starts_as_cosine_to_each_label_text(zero_shot_run, minilm_folder):
    transformers = pytest.importorskip("transformers")
    _, records = zero_shot_run
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_folder)
    bert = transformers.AutoModel.from_pretrained(minilm_folder).eval().double()

    def mean_pooled(texts: list[str]) -> torch.Tensor:
        enc = tokenizer(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = bert(**enc).last_hidden_state  # (B, T, d)
        mask = enc["attention_mask"].unsqueeze(-1).double()
        return (hidden * mask).sum(1) / mask.sum(1)  # (B, d)

    prompts = mean_pooled(list(PROMPTS.values()))  # (2, d)
    texts = mean_pooled(TEXTS)  # (4, d)
    # logit_c = (text . prompt_c / |prompt_c|) / (0.05 * mean_c |prompt_c|), bias 0
    norms = prompts.norm(dim=-1)
    logits = texts @ (prompts / norms[:, None]).T / (0.05 * norms.mean())
    expected = logits.softmax(-1)
    got = torch.tensor([[r["probs"]["0"], r["probs"]["1"]] for r in records],
                       dtype=torch.float64)
    assert torch.allclose(got, expected, atol=2e-4), (got, expected)
    # the prompts carry sentiment: the clearly worded texts go to their label
    assert [r["label"] for r in records][2:] == ["1", "0"]


def test_prompts_are_recorded_with_the_model(zero_shot_run):
    model_dir, _ = zero_shot_run
    info = json.loads((model_dir / "task.json").read_text())
    assert info["training"]["label_prompts"] == PROMPTS


@pytest.mark.parametrize(("value", "message"), [
    ('{"0": "bad"}', "--label-prompts must give one text per label ['0', '1']: "
                     "missing ['1'], unknown []"),
    ('{"0": "bad", "1": "good", "2": "meh"}', "missing [], unknown ['2']"),
    ('{"0": "bad", "1": ""}', "must map each label to a non-empty text"),
    ('{"0": "bad", ', "is not a JSON object"),
    ("no-such-prompts.json", "--label-prompts 'no-such-prompts.json' is neither a JSON "
                             "object nor a file"),
])
def test_bad_label_prompts_are_refused_by_name(minilm_folder, tmp_path, capsys, value,
                                               message):
    data = tmp_path / "train.tsv"
    data.write_text("sentence\tlabel\nfine\t1\nawful\t0\nok\t1\nbad\t0\n", encoding="utf-8")
    assert main(["finetune", "--task", "classify", "--model", str(minilm_folder), "--train",
                 str(data), "--val", str(data), "--output", str(tmp_path / "run"),
                 "--max-steps", "1", "--label-prompts", value]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "model").exists()  # refused before any training


def test_label_prompts_are_for_classify_only(minilm_folder, tmp_path, capsys):
    data = tmp_path / "train.txt"
    data.write_text("EU B-ORG\nrejects O\n\nPeter B-PER\nsaid O\n", encoding="utf-8")
    assert main(["finetune", "--task", "ner", "--model", str(minilm_folder), "--train",
                 str(data), "--val", str(data), "--output", str(tmp_path / "run"),
                 "--max-steps", "1", "--label-prompts", '{"O": "x"}']) == 2
    assert "--label-prompts applies to task 'classify', not 'ner'" in capsys.readouterr().err
