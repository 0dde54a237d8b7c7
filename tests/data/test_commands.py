"""`zenlm data prepare` and `zenlm tokenizer train` end to end, in-process."""

from __future__ import annotations

import json

from zenlm.cli import main
from zenlm.tokenizer import Tokenizer


def test_data_prepare_and_tokenizer_train(tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    rows = ["hello world, write to me@example.org", "hello world, write to me@example.org", "another line"]
    path.write_text("".join(json.dumps({"body": r}) + "\n" for r in rows) + "{broken\n", encoding="utf-8")
    assert main(["data", "prepare", str(path), "--field", "body", "--out", str(tmp_path / "c.jsonl")]) == 2
    assert "in.jsonl:4: malformed JSON" in capsys.readouterr().err
    assert main(["data", "prepare", str(path), "--field", "body", "--skip-bad-lines",
                 "--out", str(tmp_path / "c.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "bad_lines_skipped: 1" in out and "exact_duplicates: 1" in out and "'EMAIL': 2" in out  # scrubbed before dedupe
    assert main(["tokenizer", "train", str(tmp_path / "c.jsonl"), "--kind", "wordpiece",
                 "--vocab-size", "100", "--out", str(tmp_path / "tok")]) == 0
    tok = Tokenizer.from_folder(tmp_path / "tok")
    assert tok.decode(tok.encode("another line", add_special_tokens=False)) == "another line"


def test_chinese_text_tokenizes_sensibly(shared_data):
    from zenlm.tokenizer_train import train_tokenizer

    text = (shared_data / "chinese-text" / "hongloumeng.txt").read_text(encoding="utf-8")[:200_000]
    sample = "贾宝玉笑道：“好妹妹，你别生气。”"
    for kind, size in (("bpe", 3000), ("wordpiece", 3000), ("unigram", 4000), ("char", 0)):
        tok = train_tokenizer([text], kind=kind, vocab_size=size or 10)
        ids = tok.encode(sample, add_special_tokens=False)
        pieces = [tok.decode([i]) for i in ids]
        assert "\ufffd" not in "".join(pieces), (kind, pieces)  # no character cut into bytes
        assert len(ids) <= len(sample), (kind, len(ids))
        if kind in ("bpe", "char"):
            assert tok.decode(ids) == sample


def test_tokenizer_train_adds_special_tokens_once(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("房间干净，服务热情。\n设施陈旧，隔音很差。\n" * 20, encoding="utf-8")
    for kind in ("unigram", "wordpiece"):  # wordpiece has [MASK] already: not added twice
        out = tmp_path / kind
        assert main(["tokenizer", "train", str(path), "--kind", kind, "--vocab-size", "60",
                     "--txt-unit", "line", "--special-tokens", "[MASK], <x>",
                     "--out", str(out)]) == 0
        tok = Tokenizer.from_folder(out)
        added = [t.content for t in tok.backend.get_added_tokens_decoder().values() if t.special]
        assert added.count("[MASK]") == 1 and "<x>" in added, (kind, added)
        mask = tok.backend.token_to_id("[MASK]")
        assert tok.encode("[MASK]", add_special_tokens=False) == [mask]  # one token, not split
