"""The fused int4 decode step (zenlm::int4_decode_step) against the eager int4 step and the
float32 model holding the same dequantized weights, at every CPU level this machine runs.

The eager int4 step is the oracle for what is computed, to the bit: the int4 kernel rounds
activations to int8 codes, where a float difference of one ulp upstream can move a code,
and such moves grew over SmolLM2's 30 layers (and through the cache over the steps) into
0.5-5% differences of the logits and different greedy replies. The float32 twin bounds
how far both are from the weights' exact product. The checks run in fresh processes
(tests/quant/fused_check.py) so that ZENLM_CPU picks the kernel build.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import zenlm
from zenlm.cpu import LEVELS, cpu_info
from zenlm.generate.compile import compile_decoding
from zenlm.generate.core import decode_step, prefill
from zenlm.nn.attention import sdpa
from zenlm.quant.fused_step import ENV_SWITCH, FusedStep, unsupported

from ..models.tiny_hf import tiny_hf_model

CHECK = Path(__file__).with_name("fused_check.py")
ROOT = Path(__file__).parents[2]


@pytest.fixture(autouse=True)
def fused_step_on(monkeypatch):
    """The fused step is on by default; these tests are about it, whatever the environment."""
    monkeypatch.delenv(ENV_SWITCH, raising=False)


def kernel_levels() -> list[str]:
    """The levels with a kernel build that this CPU runs (avx2 up to the detected one)."""
    detected = cpu_info().detected
    return [level for level in LEVELS[1:LEVELS.index(detected) + 1] if level != "avx512"]


def fused_check(path: Path, level: str, prompt_len: int, rows: int, steps: int,
                twin: bool, free: int = 0, attention: str = "", threads: int = 0) -> dict:
    env = dict(os.environ, ZENLM_CPU=level, PYTHONPATH=str(ROOT / "src"),
               ZENLM_FUSED_ATTENTION=attention)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    env.pop(ENV_SWITCH, None)
    args = [str(path), str(prompt_len), str(rows), str(steps), str(int(twin)), str(free)]
    out = subprocess.run([sys.executable, str(CHECK), *args], env=env, capture_output=True,
                         text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def tiny_llama(folder: Path, kv_heads: int, context: int = 128, tied: bool = True) -> Path:
    """A random Llama whose every matmul is int4 (widths multiples of 64), 4 query heads;
    tied: the head is the embedding (SmolLM2), else its own weight (TinyLlama)."""
    tiny_hf_model("llama", num_key_value_heads=kv_heads, intermediate_size=128,
                  tie_word_embeddings=tied, num_hidden_layers=3,
                  max_position_embeddings=context).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory) -> dict[int | str, Path]:
    folders: dict[int | str, Path] = {
        kv: tiny_llama(tmp_path_factory.mktemp(f"llama-kv{kv}"), kv) for kv in (1, 2, 4)}
    folders["untied"] = tiny_llama(tmp_path_factory.mktemp("llama-untied"), 2, tied=False)
    return folders


def assert_agrees(report: dict) -> None:
    """Fused equal to eager to the bit: logits at every step, each layer's cache slot
    written, greedy tokens, cache lengths; no further from the float32 twin than eager
    is, when measured (equal distances). (A wrong position, head or weight errs by
    10-100% at every step; an op rounding differently from eager's, by 1e-7 to 5%.)"""
    assert report["fused"], "the fused step was not installed"
    assert max(report["fused_vs_eager"]) == 0.0, report["fused_vs_eager"]
    assert report["fused_vs_float"] == report["eager_vs_float"]
    assert report["cache"] == 0.0, report["cache"]
    assert report["greedy"]["fused"] == report["greedy"]["eager"]
    assert report["lengths"][0] == report["lengths"][1]
    for run in report["free"]:
        assert run["fused"] == run["eager"]


@pytest.mark.parametrize("level", kernel_levels())
@pytest.mark.parametrize("model,prompt_len,rows", [(2, 1, 1), (2, 9, 1), (1, 30, 1),
                                                   (4, 5, 1), (2, 7, 3), ("untied", 9, 2)])
def test_fused_step_equals_the_eager_int4_step(tiny_folders, level, model, prompt_len, rows):
    """Models by KV heads: GQA (4 query heads on 2 KV heads), MQA (1) and MHA (4), short
    and longer caches, 1 to 3 rows, 6 steps each, on every kernel build the CPU runs; and
    "untied", GQA with an output head of its own (an int4 embedding table apart)."""
    report = fused_check(tiny_folders[model], level, prompt_len, rows, 6, twin=True)
    assert report["level"] == level
    assert_agrees(report)


def test_long_contexts_split_attention_over_threads_and_stay_exact(tmp_path):
    """Past a few hundred slots the step's attention rows are split over threads (2 rows of
    4 query heads, 700 slots of 16 dims: far above the split's threshold); each row's sums
    keep their order, so the logits stay the eager step's."""
    folder = tiny_llama(tmp_path / "long", 2, context=1024)
    report = fused_check(folder, kernel_levels()[-1], 700, 2, 4, twin=False, threads=2)
    assert_agrees(report)


def test_fused_step_with_torch_bmm_attention_equals_eager(tiny_folders):
    """Where the step's own attention matmuls differ from torch.bmm's (another BLAS or CPU
    path; its check then picks torch.bmm), forced here: still the eager step's logits."""
    report = fused_check(tiny_folders[2], kernel_levels()[-1], 7, 3, 6, twin=False,
                         attention="torch")
    assert_agrees(report)


@pytest.mark.parametrize("level", kernel_levels())
def test_fused_step_on_smollm2_equals_eager_for_64_greedy_tokens(smollm2_gguf, level):
    """The real model: 30 layers, 9 query heads on 3 KV heads, tied 49,152-token head.

    32 steps fed the same tokens (a random 40-token prompt), then 64 greedy tokens each
    step generates on its own for three chats (the chatbot recipe's among them). Before
    the fused step computed the eager forward's float operations exactly, its logits
    differed by 0.5-5% (max |logit difference| / max |logit|) and its greedy replies
    parted from eager's after 9-35 tokens on 4 of 5 chats."""
    # One thread: ~4 s of work, which took 50-200 s with two threads on a busy 2-core
    # machine (OpenMP's barriers); the tiny models' cases above run multithreaded.
    report = fused_check(smollm2_gguf, level, 40, 1, 32, twin=False, free=64, threads=1)
    assert report["level"] == level
    assert len(report["free"]) == 3 and all(len(r["eager"]) == 64 for r in report["free"])
    assert_agrees(report)


@pytest.fixture()
def tiny_int4(tiny_folders):
    return zenlm.load(tiny_folders[2], quantize="int4").model


def test_other_steps_run_the_eager_forward(tiny_int4):
    """Prompts, rows of different lengths and a swapped module are not the fused step's."""
    model = tiny_int4
    step = model.step_fn
    assert isinstance(step, FusedStep)
    torch.set_grad_enabled(False)
    try:
        cache = model.new_cache(2, 16)
        prefill(model, [[5, 6, 7], [8, 9]], cache)  # ragged: lengths 3 and 2
        assert not step.covers(torch.tensor([[3], [4]]), cache)
        expected_cache = model.new_cache(2, 16)
        prefill(model, [[5, 6, 7], [8, 9]], expected_cache)
        model.step_fn = None
        expected = decode_step(model, torch.tensor([3, 4]), expected_cache)
        model.step_fn = step
        assert torch.equal(decode_step(model, torch.tensor([3, 4]), cache), expected)
        fresh = model.new_cache(1, 16)
        assert not step.covers(torch.tensor([[3, 4]]), fresh)  # two tokens: a prompt
        assert step.covers(torch.tensor([[3]]), fresh)
        attn, kernel = model.blocks[1].attn, model.blocks[1].attn.kernel
        attn.kernel = lambda *args: None  # e.g. one recording attention probabilities
        assert not step.covers(torch.tensor([[3]]), fresh)
        attn.kernel = sdpa  # a standard kernel: still covered
        assert step.covers(torch.tensor([[3]]), fresh)
        attn.kernel = kernel
        model.blocks[0].mlp.down = torch.nn.Linear(128, 64)
        assert not step.covers(torch.tensor([[3]]), fresh)
    finally:
        torch.set_grad_enabled(True)


def test_models_it_does_not_compute_keep_their_eager_step(tmp_path, monkeypatch):
    llama = tmp_path / "llama"
    tiny_hf_model("llama", intermediate_size=128).save_pretrained(llama)
    # int8: its head and embedding table are not int4
    assert "not int4" in unsupported(zenlm.load(llama, quantize="int8").model)
    window = tmp_path / "mistral"
    tiny_hf_model("mistral", intermediate_size=128, tie_word_embeddings=True
                  ).save_pretrained(window)
    assert "sliding window" in unsupported(zenlm.load(window, quantize="int4").model)
    odd = tmp_path / "odd"  # FFN of 112: down stays int8
    tiny_hf_model("llama", tie_word_embeddings=True).save_pretrained(odd)
    assert zenlm.load(odd, quantize="int4").model.step_fn is None
    assert zenlm.load(odd, quantize="int8").model.step_fn is None
    tied = tmp_path / "tied"
    tiny_llama(tied, 2)
    monkeypatch.setenv(ENV_SWITCH, "0")
    assert zenlm.load(tied, quantize="int4").model.step_fn is None


def test_compiling_keeps_the_fused_step_for_the_steps_it_covers(tiny_int4):
    """compile_decoding hands the compiled step the others (compiled lazily: not run here)."""
    step = tiny_int4.step_fn
    compile_decoding(tiny_int4)
    assert tiny_int4.step_fn is step and step.fallback is not None
