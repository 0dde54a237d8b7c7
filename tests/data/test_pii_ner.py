"""`zenlm data prepare --ner-model`: person names from a NER model fine-tuned in the test.

The oracle for the scrubbed spans is `zenlm predict --task ner` on the same words: every
word it tags PER (and only those) must be gone from the scrubbed text.
"""

from __future__ import annotations

import json
import re

import pytest

from zenlm.cli import main
from zenlm.errors import CheckpointError

PEOPLE = ["John", "Mary", "Ahmed", "Olga", "Pedro", "Grace"]
CITIES = ["Paris", "Berlin", "Lagos", "Lima", "Oslo"]
TEMPLATES = [("{p} lives in {c} now .", ["B-PER", "O", "O", "B-LOC", "O", "O"]),
             ("In {c} , {p} met friends .", ["O", "B-LOC", "O", "B-PER", "O", "O", "O"]),
             ("We called {p} from {c} .", ["O", "O", "B-PER", "O", "B-LOC", "O"])]


@pytest.fixture(scope="module")
def ner_model(minilm_folder, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ner")
    lines = []
    for i in range(60):
        template, tags = TEMPLATES[i % 3]
        words = template.format(p=PEOPLE[i % len(PEOPLE)], c=CITIES[i % len(CITIES)]).split()
        lines += [f"{w} NN O {t}" for w, t in zip(words, tags, strict=True)] + [""]
    (tmp / "train.conll").write_text("\n".join(lines))
    assert main(["finetune", "--task", "ner", "--model", str(minilm_folder), "--train",
                 str(tmp / "train.conll"), "--output", str(tmp / "run"), "--batch-size", "8",
                 "--max-steps", "8", "--lr", "1e-2", "--lora"]) == 0
    return tmp / "run" / "model"


def test_prepare_scrubs_what_predict_tags_as_person(ner_model, tmp_path, capsys):
    docs = ["Yesterday Mary wrote to olga@example.com from Lima .",
            "Pedro called +44 20 7946 0958 in Oslo !  Grace lives in Berlin ."]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    out = tmp_path / "out.jsonl"
    assert main(["data", "prepare", str(source), "--out", str(out), "--no-dedupe",
                 "--ner-model", str(ner_model)]) == 0
    scrubbed = [json.loads(line)["text"] for line in out.read_text().splitlines()]

    # The oracle: the task's own predict command on the same words (CoNLL-style: punctuation
    # apart; a sentence ends at . or !), read from the unscrubbed documents.
    sentences = []
    for doc in docs:
        words = re.findall(r"\w+(?:['’.-]\w+)*|[^\w\s]", doc)
        while words:
            end = next((i + 1 for i, w in enumerate(words) if w in ".!"), len(words))
            sentences.append(words[:end])
            words = words[end:]
    conll = tmp_path / "words.conll"
    conll.write_text("\n\n".join("\n".join(f"{w} NN O O" for w in s) for s in sentences))
    capsys.readouterr()
    assert main(["predict", "--task", "ner", "--model", str(ner_model), "--input", str(conll),
                 "--output", str(tmp_path / "pred.jsonl")]) == 0
    records = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert [r["tokens"] for r in records] == sentences
    tagged = [(w, t) for r in records for w, t in zip(r["tokens"], r["tags"], strict=True)]
    persons = {w for w, t in tagged if t.endswith("-PER")}
    others = {w for w, t in tagged if not t.endswith("-PER") and w.isalpha()}
    joined = " ".join(scrubbed)
    assert len(persons & {"Mary", "Pedro", "Grace"}) >= 2, tagged  # it learned names
    assert not any(re.search(rf"\b{re.escape(w)}\b", joined) for w in persons), joined
    kept_in_email = {"olga", "example"}  # inside the e-mail, replaced as EMAIL anyway
    assert all(re.search(rf"\b{re.escape(w)}\b", joined) for w in others - kept_in_email)
    # PER runs outside the e-mail and the phone (those spans were taken by EMAIL and PHONE).
    inside_pii = kept_in_email | {"+", "44", "20", "7946", "0958", "@", "example.com"}
    runs = sum(t.endswith("-PER") and (t == "B-PER" or not tagged[i - 1][1].endswith("-PER"))
               and w not in inside_pii for i, (w, t) in enumerate(tagged))
    report = json.loads(out.with_name("out.jsonl.report.json").read_text())
    assert report["pii_replaced"]["PERSON"] == joined.count("<PERSON>") == runs, tagged
    assert report["pii_replaced"]["EMAIL"] == report["pii_replaced"]["PHONE"] == 1


def test_ner_model_errors_name_the_problem(ner_model, tmp_path, capsys):
    from zenlm.tasks.ner_pii import NameDetector

    with pytest.raises(CheckpointError, match="no task.json"):
        NameDetector(tmp_path)
    task = json.loads((ner_model / "task.json").read_text())
    bad = tmp_path / "renamed"
    bad.mkdir()
    for item in ner_model.iterdir():
        (bad / item.name).symlink_to(item)
    (bad / "task.json").unlink()
    task["labels"] = [t.replace("PER", "HUMAN") for t in task["labels"]]
    (bad / "task.json").write_text(json.dumps(task))
    with pytest.raises(CheckpointError, match=r"no 'B-PER' tag in its labels \['O', 'B-LOC', 'B-HUMAN'\]"):
        NameDetector(bad)
    source = tmp_path / "in.txt"
    source.write_text("Mary was here.\n")
    capsys.readouterr()
    assert main(["data", "prepare", str(source), "--out", str(tmp_path / "o.jsonl"),
                 "--no-pii", "--ner-model", str(ner_model)]) != 0
    assert "--no-pii" in capsys.readouterr().err
