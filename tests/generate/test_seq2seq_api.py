"""`zenlm.load(...)` and `zenlm generate` with an encoder-decoder folder: the prompt is the
source text (no chat template); the oracle is transformers' model and tokenizer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import zenlm

from .tiny_seq2seq import tiny_marian_folder

transformers = pytest.importorskip("transformers")
ZENLM = str(Path(sys.executable).parent / "zenlm")
SOURCE = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def marian_folder(tmp_path_factory):
    """A tiny random Marian with a byte-level BPE tokenizer (</s> ends), saved by transformers."""
    folder = tmp_path_factory.mktemp("tiny_marian")
    return (folder, *tiny_marian_folder(folder))


def expected_ids(model, tokenizer, **settings) -> list[int]:
    ids = tokenizer(SOURCE, return_tensors="pt").input_ids
    config = transformers.GenerationConfig(
        do_sample=False, eos_token_id=1, pad_token_id=0, decoder_start_token_id=0,
        forced_eos_token_id=None, **settings)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             generation_config=config)[0, 1:].tolist()
    return out[: out.index(1) + 1] if 1 in out else out


@pytest.mark.parametrize("settings", [dict(max_new_tokens=12),
                                      dict(max_new_tokens=10, num_beams=3),
                                      dict(max_new_tokens=10, no_repeat_ngram_size=2)])
def test_generate_takes_the_source_text(marian_folder, settings):
    folder, model, tokenizer = marian_folder
    lm = zenlm.load(folder, quantize=None)
    ids = expected_ids(model, tokenizer, **settings)
    assert lm.generate(SOURCE, **settings) == tokenizer.decode(ids, skip_special_tokens=True)
    assert lm.complete([SOURCE], **settings)[0].result.token_ids == ids


def test_stream_pieces_make_the_generated_text(marian_folder):
    lm = zenlm.load(marian_folder[0], quantize=None)
    options = dict(max_new_tokens=14, temperature=0.9, seed=4)
    pieces = list(lm.stream(SOURCE, **options))
    assert len(pieces) > 1 and "".join(pieces) == lm.generate(SOURCE, **options)


def test_chat_reads_the_last_user_message_and_logits_are_refused(marian_folder):
    lm = zenlm.load(marian_folder[0], quantize=None)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"}, {"role": "user", "content": SOURCE}]
    assert lm.chat(messages, max_new_tokens=8) == lm.generate(SOURCE, max_new_tokens=8)
    with pytest.raises(ValueError, match="its source is the last user message"):
        lm.chat([{"role": "system", "content": "Be brief."}])
    with pytest.raises(TypeError, match="encoder-decoder"):
        lm.logits(torch.tensor([[3, 4]]))


def run(*args: str) -> subprocess.CompletedProcess:
    # a deadline for a loaded 2-core machine (each run takes seconds of CPU)
    return subprocess.run([ZENLM, *args], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(("args", "settings"), [
    ([], dict(num_beams=1)),
    (["--num-beams", "3", "--length-penalty", "0.5", "--early-stopping",
      "--no-repeat-ngram-size", "2", "--min-new-tokens", "4"],
     dict(num_beams=3, length_penalty=0.5, early_stopping=True, no_repeat_ngram_size=2,
          min_new_tokens=4)),
])
def test_cli_generate_with_a_seq2seq_folder(marian_folder, args, settings):
    folder, model, tokenizer = marian_folder
    out = run("generate", str(folder), "--prompt", SOURCE, "--max-new-tokens", "10",
              "--temperature", "0", *args, "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["token_ids"] == expected_ids(model, tokenizer, max_new_tokens=10, **settings)
    assert result["prompt_tokens"] == len(tokenizer(SOURCE).input_ids)


def test_cli_chat_with_a_seq2seq_folder_reads_the_message(marian_folder):
    folder, model, tokenizer = marian_folder
    out = run("generate", str(folder), "--prompt", SOURCE, "--chat", "--system", "Be brief.",
              "--max-new-tokens", "6", "--temperature", "0", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["token_ids"] == expected_ids(model, tokenizer,
                                                               max_new_tokens=6)
