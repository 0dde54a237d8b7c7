"""Readers, cleaning, PII, dedupe and prepare: each stage with its counts."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from zenlm.data import (
    BlockSampler,
    ExactDeduper,
    MinHashDeduper,
    PrepareOptions,
    ReadStats,
    build_shards,
    clean_text,
    luhn_valid,
    prepare_corpus,
    read_documents,
    scrub_pii,
    token_dtype,
)
from zenlm.tokenizer_train import train_tokenizer


def test_readers_all_formats(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    (tmp_path / "a.txt").write_text("para one\nline two\n\npara two\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text('{"text": "j1"}\n\n{"text": "j2", "x": 1}\n', encoding="utf-8")
    (tmp_path / "c.csv").write_text('text,label\n"a, quoted ""x""",1\n', encoding="utf-8")
    (tmp_path / "d.tsv").write_text("text\tlabel\ttab doc\t0\n".replace("\ttab", "\ntab"), encoding="utf-8")
    pq.write_table(pa.table({"text": ["p1", "p2"]}), tmp_path / "e.parquet")
    stats = ReadStats()
    docs = list(read_documents([tmp_path], stats=stats))
    assert docs == ["para one\nline two", "para two", "j1", "j2", 'a, quoted "x"', "tab doc", "p1", "p2"]
    assert (stats.files, stats.documents, stats.bad_lines) == (5, 8, 0)
    assert list(read_documents([tmp_path / "a.txt"], txt_unit="file")) == ["para one\nline two\n\npara two\n"]
    assert list(read_documents([tmp_path / "a.txt"], txt_unit="line")) == ["para one", "line two", "para two"]


def test_malformed_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"text": oops}\n{"other": 1}\n{"text": "ok2"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: malformed JSON"):
        list(read_documents([path]))
    stats = ReadStats()
    assert list(read_documents([path], skip_bad_lines=True, stats=stats)) == ["ok", "ok2"]
    assert stats.bad_lines == 2


def test_missing_file_and_empty_corpus(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        list(read_documents([tmp_path / "nope.txt"]))
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty corpus"):
        prepare_corpus([tmp_path / "empty.txt"], tmp_path / "out.jsonl", progress=False)


def test_clean_text():
    raw = "Ｈｅｌｌｏ\u200b  world\x00\t!\r\n\r\n\r\n\r\nﬁne  \n"
    assert clean_text(raw) == "Hello world !\n\nfine"


def test_luhn_and_pii_counts():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    text = ("Mail bob.smith@example.co.uk or call +1 (415) 555-2671 / 020 7946 0958. "
            "Server 192.168.1.20, card 4111 1111 1111 1111, order 4111 1111 1111 1112, "
            "SSN 123-45-6789, 身份证 11010519491231002X, year 2024, v1.2.3.4.5")
    counts: Counter[str] = Counter()
    out = scrub_pii(text, counts)
    assert dict(counts) == {"EMAIL": 1, "PHONE": 2, "IP": 1, "CARD": 1, "ID": 2}
    assert "4111 1111 1111 1112" in out and "2024" in out and "v1.2.3.4.5" in out
    assert "example" not in out and "555" not in out and "6789" not in out


def test_exact_and_near_dedupe():
    exact = ExactDeduper()
    assert not exact.seen("The  cat sat.") and exact.seen("the cat sat.")
    base = " ".join(f"word{i}" for i in range(200))
    near = MinHashDeduper(0.8)
    assert not near.seen(base)
    assert near.seen(base.replace("word7 ", "wordX "))  # one word changed: ~97% similar
    assert not near.seen(" ".join(f"other{i}" for i in range(200)))


def _jaccard_of_5grams(a: str, b: str) -> float:
    """Exact Jaccard similarity of two texts' character 5-gram sets (lower-cased)."""
    grams = [{t[i:i + 5] for i in range(len(t) - 4)} for t in (a.lower(), b.lower())]
    return len(grams[0] & grams[1]) / len(grams[0] | grams[1])


def test_near_dedupe_decides_as_exact_jaccard_away_from_the_threshold():
    """Edited copies of one text: those clearly above 0.8 exact similarity are dropped,
    those clearly below are kept (MinHash's error at 128 hashes is ~0.035)."""
    rng = np.random.default_rng(0)
    words = [f"w{int(i)}" for i in rng.integers(0, 5000, 300)]
    base = " ".join(words)
    checked = 0
    for rate in (0.01, 0.02, 0.03, 0.2, 0.3, 0.5):
        edited = list(words)
        for i in rng.choice(len(words), int(rate * len(words)), replace=False):
            edited[i] = f"x{int(rng.integers(0, 5000))}"
        copy = " ".join(edited)
        similarity = _jaccard_of_5grams(base, copy)
        if abs(similarity - 0.8) < 0.12:
            continue  # too close to the threshold for a 128-hash estimate to be certain
        near = MinHashDeduper(0.8)
        assert not near.seen(base)
        assert near.seen(copy) == (similarity >= 0.8), f"rate {rate}: Jaccard {similarity:.3f}"
        checked += 1
    assert checked >= 4


def test_prepare_report(tmp_path):
    base = " ".join(f"token{i}" for i in range(100))
    rows = [base, base, base + " extra", "mail me: a@b.com", "  ", "unique text here"]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"text": r}) + "\n" for r in rows) + "not json\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    report = prepare_corpus([path], out, PrepareOptions(skip_bad_lines=True), progress=False)
    assert report.documents_read == 6 and report.bad_lines_skipped == 1
    assert report.dropped_short == 1 and report.exact_duplicates == 1 and report.near_duplicates == 1
    assert report.pii_replaced == {"EMAIL": 1} and report.documents_written == 3
    written = [json.loads(line)["text"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert written == [base, "mail me: <EMAIL>", "unique text here"]
    assert json.loads(out.with_name("out.jsonl.report.json").read_text())["near_duplicates"] == 1


def test_shards_cached_split_and_dtype(tmp_path):
    text = "hello world. " * 400
    corpus = tmp_path / "c.txt"
    corpus.write_text(text, encoding="utf-8")
    tok = train_tokenizer([text], kind="char")
    shards = build_shards([corpus], tok, tmp_path / "cache", val_fraction=0.1, txt_unit="file", progress=False)
    assert shards.tokens.dtype == np.uint16
    assert len(shards.tokens) == len(text) + 1  # one EOS after the document
    assert len(shards.val) == int(len(shards.tokens) * 0.1)
    assert tok.decode(shards.train[:13].tolist()) == "hello world. "
    again = build_shards([corpus], tok, tmp_path / "cache", val_fraction=0.1, txt_unit="file", progress=False)
    assert again.folder == shards.folder and len(list((tmp_path / "cache").iterdir())) == 1
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


def test_large_vocab_uses_uint32(tmp_path):
    from tokenizers import Tokenizer as HF
    from tokenizers import models, pre_tokenizers

    from zenlm.tokenizer import Tokenizer

    vocab = {f"w{i}": i for i in range(70000)}
    backend = HF(models.WordLevel(vocab, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    corpus = tmp_path / "c.txt"
    corpus.write_text("w69999 w5 w66000 " * 10, encoding="utf-8")
    shards = build_shards([corpus], Tokenizer(backend), tmp_path / "cache", val_fraction=0.0, txt_unit="file", progress=False)
    assert shards.tokens.dtype == np.uint32 and shards.tokens[:3].tolist() == [69999, 5, 66000]


def test_block_sampler_is_a_function_of_seed_and_index():
    tokens = np.arange(1000, dtype=np.uint16)
    a, b = BlockSampler(tokens, 16, seed=3), BlockSampler(tokens, 16, seed=3)
    assert a.batch(0, 4).shape == (4, 17)
    # Random access in any order gives the same blocks.
    assert np.array_equal(a.batch(100, 3), b.batch(100, 3)) and np.array_equal(a.batch(5, 2), b.batch(5, 2))
    epoch = [a.block(i)[0] for i in range(a.blocks_per_epoch)]
    assert len(set(int(s) % 16 for s in epoch)) == 1 and len(set(map(int, epoch))) == a.blocks_per_epoch
    block = a.block(7)
    assert np.array_equal(block, np.arange(block[0], block[0] + 17))
