"""torch.compile of the decode step gives the same tokens as eager decoding."""

from __future__ import annotations

import pytest
import torch

import zenlm
from zenlm.generate import GenerationConfig, generate
from zenlm.generate.compile import compile_decoding

from ..models.tiny_hf import VOCAB, tiny_hf_model


@pytest.mark.parametrize("quantize", ["int8"])
def test_compiled_greedy_equals_eager(tmp_path, quantize):
    tiny_hf_model("llama").save_pretrained(tmp_path)
    eager = zenlm.load(tmp_path, quantize=quantize)
    prompt = torch.randint(3, VOCAB, (9,)).tolist()
    config = GenerationConfig(max_new_tokens=20)
    expected = generate(eager.model, prompt, config).token_ids
    compiled = compile_decoding(zenlm.load(tmp_path, quantize=quantize).model)
    assert generate(compiled, prompt, config).token_ids == expected
    assert generate(compiled, prompt[:4], config).token_ids == generate(
        eager.model, prompt[:4], config).token_ids


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
        expected.append(generate(zenlm.load(folder).model, prompt, config).token_ids)
        compiled.append(compile_decoding(zenlm.load(folder).model))
    for model, tokens in zip(compiled, expected, strict=True):
        assert generate(model, prompt, config).token_ids == tokens
    assert expected[0] != expected[1]


def test_compile_failure_falls_back_to_eager(tmp_path, monkeypatch):
    tiny_hf_model("llama").save_pretrained(tmp_path)
    lm = zenlm.load(tmp_path)
    prompt = torch.randint(3, VOCAB, (5,)).tolist()
    expected = generate(lm.model, prompt, GenerationConfig(max_new_tokens=6)).token_ids

    def broken(fn, **_):
        def fail(*args, **kwargs):
            raise RuntimeError("no C++ compiler")
        return fail

    monkeypatch.setattr(torch, "compile", broken)
    compile_decoding(lm.model)
    assert generate(lm.model, prompt, GenerationConfig(max_new_tokens=6)).token_ids == expected
