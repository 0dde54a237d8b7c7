"""Task-data readers: the shared files parse with their documented counts, and bad
input fails with file:line."""

from __future__ import annotations

import json

import pytest

from zenlm.data.tasks import (
    TaskDataError,
    read_chat,
    read_classification,
    read_conll,
    read_squad,
)


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_tsv_and_csv(tmp_path):
    tsv = _write(tmp_path, "a.tsv", "sentence\tlabel\ngood film \t1\nbad , \"really\"\t0\n")
    rows = read_classification(tsv, labels=["0", "1"])
    assert [(r.text, r.label, r.line) for r in rows] == [
        ("good film ", "1", 2), ('bad , "really"', "0", 3)]
    csv_file = _write(tmp_path, "a.csv", 'label,review\n1,"multi\nline, quoted"\n0,plain\n')
    rows = read_classification(csv_file)
    assert [(r.text, r.line) for r in rows] == [("multi\nline, quoted", 2), ("plain", 4)]


def test_bad_label_names_file_and_line(tmp_path):
    path = _write(tmp_path, "a.tsv", "sentence\tlabel\nok\t1\nhmm\t2\n")
    with pytest.raises(TaskDataError, match=r"a\.tsv:3: label '2' is not in the label set"):
        read_classification(path, labels=["0", "1"])


@pytest.mark.parametrize("reader,name", [
    (read_classification, "e.tsv"), (read_conll, "e.txt"), (read_squad, "e.json"),
    (read_chat, "e.jsonl")])
def test_empty_files(tmp_path, reader, name):
    with pytest.raises(TaskDataError, match=rf"{name}:1: empty file"):
        reader(_write(tmp_path, name, "\n  \n"))


def test_wrong_field_count(tmp_path):
    path = _write(tmp_path, "a.tsv", "sentence\tlabel\nok\t1\textra\n")
    with pytest.raises(TaskDataError, match=r"a\.tsv:2: 3 fields"):
        read_classification(path)


CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""


def test_conll(tmp_path):
    sentences = read_conll(_write(tmp_path, "c.txt", CONLL))
    assert [s.tokens for s in sentences] == [["EU", "rejects", "German"], ["Peter", "Blackburn"]]
    assert sentences[1].tags == ["B-PER", "I-PER"] and sentences[1].line == 7


@pytest.mark.parametrize("bad,message", [
    ("Peter NNP B-NP I-PER\n", r"c\.txt:1: broken BIO sequence: 'I-PER' follows 'O'"),
    ("Peter NNP B-NP B-PER\nX NNP B-NP I-LOC\n", r"c\.txt:2: broken BIO.*'I-LOC' follows 'B-PER'"),
    ("Peter NNP B-NP PER\n", r"c\.txt:1: tag 'PER' is not O"),
])
def test_conll_broken_bio(tmp_path, bad, message):
    with pytest.raises(TaskDataError, match=message):
        read_conll(_write(tmp_path, "c.txt", bad))


def _squad(context, answer, start):
    qa = {"answers": [{"answer_start": start, "text": answer}], "question": "Q?", "id": "q1"}
    return json.dumps({"data": [{"title": "T", "paragraphs": [{"context": context, "qas": [qa]}]}]},
                      indent=1)


def test_squad(tmp_path):
    examples = read_squad(_write(tmp_path, "s.json", _squad("The cat sat.", "cat", 4)))
    assert examples[0].answers == [("cat", 4)] and examples[0].context == "The cat sat."


def test_squad_answer_not_in_context(tmp_path):
    path = _write(tmp_path, "s.json", _squad("The cat sat.", "dog", 4))
    with pytest.raises(TaskDataError, match=r"s\.json:\d+: .*answer 'dog' is not at answer_start 4.*not in the context"):
        read_squad(path)
    with pytest.raises(TaskDataError, match="it occurs at 4"):
        read_squad(_write(tmp_path, "t.json", _squad("The cat sat.", "cat", 5)))


def test_chat(tmp_path):
    lines = [
        {"instruction": "Add.", "input": "1+1", "output": "2"},
        {"instruction": "Hi", "input": "", "output": ""},
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
    ]
    path = _write(tmp_path, "c.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    examples = read_chat(path)
    assert examples[0].messages[0]["content"] == "Add.\n\n1+1"
    assert examples[1].messages[1] == {"role": "assistant", "content": ""}
    assert examples[2].line == 3
    bad = _write(tmp_path, "d.jsonl", '{"messages": [{"role": "user", "content": "a"}]}\n{oops\n')
    with pytest.raises(TaskDataError, match=r"d\.jsonl:1: no assistant turn"):
        read_chat(bad)


def test_shared_files_parse_with_documented_counts(shared_data):
    assert len(read_classification(shared_data / "sst2/train.tsv", labels=["0", "1"])) == 67349
    assert len(read_classification(shared_data / "chnsenticorp/train.csv")) == 6766
    assert len(read_conll(shared_data / "conll2003/valid.txt")) == 3250
    assert len(read_squad(shared_data / "squad/train-sample.json")) == 11089
    assert len(read_chat(shared_data / "alpaca/alpaca_5k.jsonl")) == 5000


def test_unlabelled_inputs_for_prediction(tmp_path):
    sentences = read_conll(_write(tmp_path, "p.txt", "Peter\nlives\n\nhere\n"), require_tags=False)
    assert [s.tokens for s in sentences] == [["Peter", "lives"], ["here"]]
    with pytest.raises(TaskDataError, match=r"p\.txt:1: expected 'token ... TAG'"):
        read_conll(tmp_path / "p.txt")
    qa = {"question": "Q?", "id": "q9"}
    doc = json.dumps({"data": [{"title": "T", "paragraphs": [{"context": "c", "qas": [qa]}]}]})
    path = _write(tmp_path, "q.json", doc)
    assert read_squad(path, require_answers=False)[0].answers == []
    with pytest.raises(TaskDataError, match=r"q\.json:1: .*\(id q9\): no answers"):
        read_squad(path)
