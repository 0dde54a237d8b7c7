"""Incremental detokenization: UTF-8 safe deltas and stop strings."""

from __future__ import annotations

import pytest

from zenlm.generate import TextStream
from zenlm.tokenizer import Tokenizer

from ..test_tokenizer import bpe_folder  # noqa: F401 - fixture


@pytest.fixture(scope="module")
def tokenizer(bpe_folder):  # noqa: F811
    return Tokenizer.from_folder(bpe_folder)


TEXTS = ["emoji 👩‍👩‍👧‍👦 and 🤗 done", "中文分词测试：你好，世界。", "plain words, then more"]


@pytest.mark.parametrize("text", TEXTS)
def test_deltas_are_whole_characters_and_add_up(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    stream = TextStream(tokenizer)
    deltas = [stream.push(t) for t in ids]
    deltas.append(stream.finish())
    assert "".join(deltas) == tokenizer.decode(ids)
    assert all("\ufffd" not in d for d in deltas)


def test_multibyte_characters_split_over_tokens(tokenizer):
    ids = tokenizer.encode("🤗", add_special_tokens=False)
    assert len(ids) > 1  # byte-level pieces of one character
    stream = TextStream(tokenizer)
    assert [stream.push(t) for t in ids[:-1]] == [""] * (len(ids) - 1)
    assert stream.push(ids[-1]) == "🤗"


def test_stop_string_across_tokens_is_cut_and_never_shown(tokenizer):
    text = "plain words, then more words"
    ids = tokenizer.encode(text, add_special_tokens=False)
    stream = TextStream(tokenizer, stop=["then m"])
    shown = ""
    for token in ids:
        shown += stream.push(token)
        if stream.stopped:
            break
    shown += stream.finish()
    assert stream.stopped
    assert shown == "plain words, "


def test_held_back_prefix_is_released_when_it_is_not_a_stop(tokenizer):
    stream = TextStream(tokenizer, stop=["words, x"])
    ids = tokenizer.encode("plain words, then", add_special_tokens=False)
    shown = "".join(stream.push(t) for t in ids) + stream.finish()
    assert shown == "plain words, then" and not stream.stopped
