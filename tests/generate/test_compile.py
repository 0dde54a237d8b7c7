"""torch.compile of the decode step gives the same tokens as eager decoding."""

from __future__ import annotations

import logging

import pytest
import torch

import zenlm
from zenlm.generate import GenerationConfig, generate
from zenlm.generate.compile import compile_decoding

from ..models.tiny_hf import VOCAB, tiny_hf_model


@pytest.mark.parametrize("quantize", ["int8"])
def test_compiled_greedy_equals_eager(tmp_path, quantize, caplog):
    tiny_hf_model("llama").save_pretrained(tmp_path)
    eager = zenlm.load(tmp_path, quantize=quantize)
    prompt = torch.randint(3, VOCAB, (9,)).tolist()
    config = GenerationConfig(max_new_tokens=20)
    expected = generate(eager.model, prompt, config).token_ids
    compiled = compile_decoding(zenlm.load(tmp_path, quantize=quantize).model)
    assert generate(compiled, prompt, config).token_ids == expected
    assert generate(compiled, prompt[:4], config).token_ids == generate(
        eager.model, prompt[:4], config).token_ids
    assert "torch.compile failed" not in caplog.text  # compiled, not the eager fallback


def _step_logits(model, tokens: list[int], prompt_len: int) -> torch.Tensor:
    """Next-token logits (len(tokens) - prompt_len + 1, V): a prefill, then decode steps
    fed `tokens` (teacher-forced, so both models see the same inputs)."""
    cache = model.new_cache(1, len(tokens) + 1)
    with torch.no_grad():
        out = [model(torch.tensor([tokens[:prompt_len]]), cache=cache)[0, -1]]
        for token in tokens[prompt_len:]:
            out.append(model.step(torch.tensor([[token]]), cache)[0, -1])
    return torch.stack(out)


def test_compiled_int4_steps_match_eager(tmp_path, caplog):
    """zenlm's int4 kernel (a custom op) inside the compiled graph. Logits, not greedy
    tokens: the kernel rounds activations to int8, so inductor's differently-ordered
    float sums can flip a rounding and then a near-tie (seen: 3.4393 vs 3.4339)."""
    tiny_hf_model("llama").save_pretrained(tmp_path)
    eager = zenlm.load(tmp_path, quantize="int4").model
    compiled = compile_decoding(zenlm.load(tmp_path, quantize="int4").model)
    prompt = torch.randint(3, VOCAB, (9,), generator=torch.Generator().manual_seed(0)).tolist()
    tokens = prompt + generate(eager, prompt, GenerationConfig(max_new_tokens=16)).token_ids
    expected, got = _step_logits(eager, tokens, 9), _step_logits(compiled, tokens, 9)
    print(f"relative logit difference {((got - expected).norm() / expected.norm()).item():.4f}")
    assert torch.equal(got[0], expected[0])  # the prefill: the same kernels on the same input
    # then within int8-rounding noise, compounding through the cache (a wrong layout or
    # shape inside the graph would err by ~100%)
    assert (got - expected).norm() <= 0.05 * expected.norm()
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.8
    assert "torch.compile failed" not in caplog.text  # compiled, not the eager fallback


@pytest.mark.parametrize("field,sizes", [("num_hidden_layers", (2, 3)),
                                         ("intermediate_size", (112, 96))])
def test_two_compiled_models_keep_their_own_steps(tmp_path, field, sizes):
    """Guards on modules are skipped for speed, so each model needs compiled code of its
    own: a second model of another shape must not run the first one's graph."""
    prompt = torch.randint(3, VOCAB, (7,)).tolist()
    config = GenerationConfig(max_new_tokens=12)
    expected, compiled = [], []
    for size in sizes:
        folder = tmp_path / f"{field}{size}"
        tiny_hf_model("llama", **{field: size}).save_pretrained(folder)
        expected.append(generate(zenlm.load(folder, quantize=None).model, prompt, config).token_ids)
        compiled.append(compile_decoding(zenlm.load(folder, quantize=None).model))
    for model, tokens in zip(compiled, expected, strict=True):
        assert generate(model, prompt, config).token_ids == tokens
    assert expected[0] != expected[1]


def test_compile_failure_falls_back_to_eager(tmp_path, monkeypatch, caplog):
    tiny_hf_model("llama").save_pretrained(tmp_path)
    lm = zenlm.load(tmp_path, quantize=None)
    prompt = torch.randint(3, VOCAB, (5,)).tolist()
    expected = generate(lm.model, prompt, GenerationConfig(max_new_tokens=6)).token_ids
    attempts = []

    def broken(fn, **_):
        def fail(*args, **kwargs):
            attempts.append(args)
            raise RuntimeError("no C++ compiler")
        return fail

    monkeypatch.setattr(torch, "compile", broken)
    compile_decoding(lm.model)
    with caplog.at_level(logging.WARNING):
        assert generate(lm.model, prompt, GenerationConfig(max_new_tokens=6)).token_ids == expected
    # The compiled step was tried once, failed, and every step since ran eagerly.
    assert len(attempts) == 1
    assert "torch.compile failed (RuntimeError: no C++ compiler)" in caplog.text
