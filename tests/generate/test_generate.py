"""The generation loop: greedy equals transformers' greedy; sampling controls behave."""

from __future__ import annotations

import pytest
import torch

from zenlm.generate import GenerationConfig, generate
from zenlm.generate.sampling import mask_top_k, mask_top_p, sample_next

from ..models.tiny_hf import VOCAB

transformers = pytest.importorskip("transformers")


def test_greedy_equals_transformers_greedy(pair):
    hf, lm = pair
    prompt = torch.randint(3, VOCAB, (1, 9))
    with torch.no_grad():
        expected = hf.generate(prompt, max_new_tokens=30, do_sample=False, eos_token_id=None,
                               pad_token_id=0, attention_mask=torch.ones_like(prompt))
    result = generate(lm.model, prompt[0].tolist(), GenerationConfig(max_new_tokens=30))
    assert result.token_ids == expected[0, 9:].tolist()
    assert result.finish_reason == "length"


def test_stop_token_ends_generation(pair):
    _, lm = pair
    prompt = torch.randint(3, VOCAB, (8,)).tolist()
    free = generate(lm.model, prompt, GenerationConfig(max_new_tokens=12)).token_ids
    stop = free[4]
    first = free.index(stop)
    result = generate(lm.model, prompt, GenerationConfig(max_new_tokens=12, stop_token_ids=[stop]))
    assert result.token_ids == free[: first + 1]
    assert result.finish_reason == "stop"


def test_seeded_sampling_is_reproducible(pair):
    _, lm = pair
    prompt = torch.randint(3, VOCAB, (8,)).tolist()
    config = GenerationConfig(max_new_tokens=20, temperature=1.0, top_p=0.9, seed=123)
    runs = [generate(lm.model, prompt, config).token_ids for _ in range(2)]
    assert runs[0] == runs[1]
    other = generate(lm.model, prompt, GenerationConfig(max_new_tokens=20, temperature=1.0,
                                                        seed=124)).token_ids
    assert other != runs[0]


def test_generation_stops_at_context_end(pair):
    _, lm = pair
    context = lm.config.max_seq_len
    prompt = torch.randint(3, VOCAB, (context - 3,)).tolist()
    result = generate(lm.model, prompt, GenerationConfig(max_new_tokens=50))
    assert len(result.token_ids) == 3


@pytest.mark.parametrize("options,pattern", [
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_new_tokens": -1}, "max_new_tokens"),
    ({"temperature": -0.5}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.1}, "top_p"),
    ({"top_k": -1}, "top_k"),
])
def test_bad_options_name_the_parameter(pair, options, pattern):
    _, lm = pair
    with pytest.raises(ValueError, match=pattern):
        generate(lm.model, [5, 6], GenerationConfig(**options))


def test_empty_and_too_long_prompts(pair):
    _, lm = pair
    with pytest.raises(ValueError, match="empty"):
        generate(lm.model, [], GenerationConfig())
    with pytest.raises(ValueError, match="context is 128"):
        generate(lm.model, [5] * 128, GenerationConfig())


def test_top_k_and_top_p_masks_match_float64_reference():
    logits = torch.randn(4, 50, dtype=torch.float64)
    k_mask = torch.isinf(mask_top_k(logits.float(), 7))
    for row in range(4):
        keep = set(logits[row].argsort(descending=True)[:7].tolist())
        assert {i for i in range(50) if not k_mask[row, i]} == keep
    p = 0.8
    p_mask = torch.isinf(mask_top_p(logits.float(), p))
    for row in range(4):
        probs = torch.softmax(logits[row], dim=-1)
        order = probs.argsort(descending=True).tolist()
        keep, total = set(), 0.0
        for index in order:  # smallest prefix whose mass reaches p
            keep.add(index)
            total += probs[index].item()
            if total >= p:
                break
        assert {i for i in range(50) if not p_mask[row, i]} == keep


def test_greedy_is_argmax():
    logits = torch.randn(3, 20)
    assert torch.equal(sample_next(logits), logits.argmax(-1))
