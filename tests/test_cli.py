"""The real `zenlm` console command, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .models.tiny_hf import randomize
from .test_tokenizer import bpe_folder  # noqa: F401 - fixture

transformers = pytest.importorskip("transformers")
ZENLM = str(Path(sys.executable).parent / "zenlm")


@pytest.fixture(scope="module")
def tiny_chat_model(bpe_folder):  # noqa: F811
    """A tiny Llama with the trained BPE tokenizer and a ChatML template."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(bpe_folder)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
    )
    model = randomize(transformers.LlamaForCausalLM(config)).eval()
    model.save_pretrained(bpe_folder)
    return bpe_folder, model, tokenizer


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ZENLM, *args], capture_output=True, text=True, timeout=120)


def test_generate_json_has_every_field(tiny_chat_model):
    folder, model, tokenizer = tiny_chat_model
    # --quantize none: float32 as transformers computes it (the default, auto, may be bf16);
    # --temperature 0: left out, sampling options take --sampling-defaults (not greedy)
    out = run("generate", str(folder), "--prompt", "Hello, world", "--max-new-tokens", "12",
              "--quantize", "none", "--temperature", "0", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert set(result) >= {"text", "token_ids", "prompt_tokens", "new_tokens", "prefill_s",
                           "decode_s", "decode_tokens_per_s"}
    prompt = tokenizer("Hello, world", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = model.generate(prompt, max_new_tokens=12, do_sample=False,
                                  attention_mask=torch.ones_like(prompt))[0, prompt.shape[1]:]
    stop = tokenizer.eos_token_id
    expected = expected.tolist()
    if stop in expected:
        expected = expected[: expected.index(stop) + 1]
    assert result["token_ids"] == expected
    assert result["prompt_tokens"] == prompt.shape[1]
    assert result["new_tokens"] == len(expected)


def test_generate_chat_uses_the_template(tiny_chat_model):
    folder, _, _ = tiny_chat_model
    out = run("generate", str(folder), "--prompt", "hi", "--chat", "--max-new-tokens", "3",
              "--json")
    assert out.returncode == 0, out.stderr
    # <|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n
    assert json.loads(out.stdout)["prompt_tokens"] >= 6


@pytest.mark.parametrize("args,message", [
    (["--max-new-tokens", "0"], "max_new_tokens"),
    (["--temperature", "-1"], "temperature"),
    (["--top-p", "1.5"], "top_p"),
])
def test_bad_options_exit_2_with_one_line(tiny_chat_model, args, message):
    folder, _, _ = tiny_chat_model
    out = run("generate", str(folder), "--prompt", "hi", *args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_missing_model_is_one_clear_line(tmp_path):
    out = run("generate", str(tmp_path / "absent"), "--prompt", "hi")
    assert out.returncode == 2
    assert "not found" in out.stderr and "Traceback" not in out.stderr


def test_bench_json_reports_speed_and_memory(tiny_chat_model):
    """`zenlm bench` through the real command: every field the issue names, and sane."""
    folder, _, _ = tiny_chat_model
    out = run("bench", str(folder), "--quantize", "int8", "--prompt-tokens", "32",
              "--new-tokens", "8", "--threads", "1", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["quantize"] == "int8" and result["threads"] == 1
    assert result["new_tokens"] == 8 and result["prefill_tokens"] == 32
    for key in ("decode_tokens_per_s", "prefill_tokens_per_s", "load_s", "weights_mb"):
        assert result[key] > 0, key
    # the generating peak is reset after loading, so it is at most the process's peak
    assert 0 < result["generate_peak_rss_mb"] <= result["peak_rss_mb"]

