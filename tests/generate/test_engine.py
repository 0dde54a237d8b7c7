"""The generation engine: batching, caching, speculation, beams, penalties, logprobs."""

from __future__ import annotations

import copy

import pytest
import torch

import zenlm
from zenlm.generate import GenerationConfig, generate, generate_batch
from zenlm.generate.beam import beam_search
from zenlm.generate.sampling import SamplingParams, apply_penalties, mask_min_p
from zenlm.generate.speculative import lookup_guesses, speculative_generate
from zenlm.models.decoder import DecoderLM
from zenlm.nn.cpu_attention import cpu_attention, use_cpu_attention

from ..models.tiny_hf import VOCAB, tiny_hf_model

transformers = pytest.importorskip("transformers")


def _prompts(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in lengths]


def test_batch_of_different_lengths_equals_one_by_one(pair):
    _, lm = pair
    prompts = _prompts([3, 17, 9, 30])
    config = GenerationConfig(max_new_tokens=20)
    batched = generate_batch(lm.model, prompts, config)
    for prompt, result in zip(prompts, batched, strict=True):
        assert result.token_ids == generate(lm.model, prompt, config).token_ids


def test_batch_rows_stop_independently(pair):
    _, lm = pair
    prompts = _prompts([5, 12])
    free = generate(lm.model, prompts[0], GenerationConfig(max_new_tokens=15)).token_ids
    stop = free[3]
    config = GenerationConfig(max_new_tokens=15, stop_token_ids=[stop])
    results = generate_batch(lm.model, prompts, config)
    assert results[0].token_ids == free[: free.index(stop) + 1]
    assert results[0].finish_reason == "stop"
    alone = generate(lm.model, prompts[1], config)
    assert results[1].token_ids == alone.token_ids


def test_cached_greedy_equals_uncached_greedy(pair):
    _, lm = pair
    prompt = _prompts([11])[0]
    cached = generate(lm.model, prompt, GenerationConfig(max_new_tokens=25)).token_ids
    tokens = list(prompt)
    for _ in range(25):  # no cache: the whole sequence through the model every step
        tokens.append(int(lm.logits(torch.tensor([tokens]))[0, -1].argmax()))
    assert cached == tokens[len(prompt):]


def _with_key_multiple(monkeypatch, multiple):
    """Make every new cache read keys in multiples of `multiple` slots."""
    plain = DecoderLM.new_cache

    def new_cache(self, batch, max_len):
        cache = plain(self, batch, max_len)
        cache.key_multiple = multiple
        return cache

    monkeypatch.setattr(DecoderLM, "new_cache", new_cache)


def test_reading_keys_in_rounded_lengths_changes_nothing(pair, monkeypatch):
    _, lm = pair
    prompts = _prompts([3, 17, 9])
    config = GenerationConfig(max_new_tokens=20, logprobs=True)
    exact = [generate(lm.model, p, config) for p in prompts]
    _with_key_multiple(monkeypatch, 8)
    rounded = [generate(lm.model, p, config) for p in prompts]
    for a, b in zip([*exact, *exact], [*rounded, *generate_batch(lm.model, prompts, config)],
                    strict=True):
        assert a.token_ids == b.token_ids
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 1e-5


def test_bfloat16_decoding_sees_few_distinct_key_lengths(pair, monkeypatch):
    """oneDNN keeps a compiled matmul per shape: one key length per token grew RSS."""
    _, lm = pair
    model = copy.deepcopy(lm.model).to(torch.bfloat16)
    seen = set()

    def spy(q, k, v, mask, is_causal, scale):
        seen.add(k.shape[2])
        return cpu_attention(q, k, v, mask, is_causal, scale)

    use_cpu_attention(model, kernel=spy)
    generate(model, _prompts([5])[0], GenerationConfig(max_new_tokens=100, stop_token_ids=()))
    assert 2 <= len(seen) <= 3  # 105 slots in multiples of 64 (and the short prompt)


def test_speculative_prompt_lookup_equals_greedy(pair):
    _, lm = pair
    # A repetitive prompt gives the lookup something to find.
    prompt = _prompts([6])[0] * 4
    config = GenerationConfig(max_new_tokens=30)
    plain = generate(lm.model, prompt, config).token_ids
    result, passes = speculative_generate(lm.model, prompt, config)
    assert result.token_ids == plain
    assert passes <= 30


def test_speculative_with_a_draft_model_equals_greedy(pair, tmp_path):
    hf, lm = pair
    # Draft: the same family with one layer fewer (shares the vocabulary).
    draft_hf = tiny_hf_model("llama")
    draft_hf.save_pretrained(tmp_path)
    draft = zenlm.load(tmp_path, quantize=None).model
    prompt = _prompts([8])[0]
    config = GenerationConfig(max_new_tokens=24)
    plain = generate(lm.model, prompt, config).token_ids
    assert speculative_generate(lm.model, prompt, config, draft=draft)[0].token_ids == plain
    # The model as its own draft: every guess is accepted.
    result, passes = speculative_generate(lm.model, prompt, config, draft=lm.model,
                                          num_guesses=4)
    assert result.token_ids == plain
    assert passes <= 1 + (24 + 4) // 5


def test_lookup_guesses():
    assert lookup_guesses([1, 2, 3, 9, 1, 2, 3], k=2) == [9, 1]
    assert lookup_guesses([1, 2, 3, 4], k=2) == []
    assert lookup_guesses([5, 7, 5], k=3) == [7, 5]


@pytest.mark.parametrize("num_beams,length_penalty,early_stopping", [
    (2, 1.0, False), (3, 1.0, True), (4, 0.5, False), (3, 2.0, False),
])
def test_beam_search_equals_transformers(pair, num_beams, length_penalty, early_stopping):
    hf, lm = pair
    prompt = _prompts([7], seed=3)[0]
    greedy = generate(lm.model, prompt, GenerationConfig(max_new_tokens=12)).token_ids
    eos = greedy[4]  # a token the model likes, so that beams finish early too
    ids = torch.tensor([prompt])
    with torch.no_grad():
        expected = hf.generate(
            ids, attention_mask=torch.ones_like(ids), num_beams=num_beams, do_sample=False,
            max_new_tokens=12, length_penalty=length_penalty, early_stopping=early_stopping,
            eos_token_id=eos, pad_token_id=eos, num_return_sequences=num_beams,
        )[:, len(prompt):].tolist()
    config = GenerationConfig(max_new_tokens=12, num_beams=num_beams, stop_token_ids=[eos],
                              length_penalty=length_penalty, early_stopping=early_stopping,
                              num_return_sequences=num_beams)
    ours = [r.token_ids for r in beam_search(lm.model, prompt, config)]
    trimmed = [_trim(seq, eos) for seq in expected]
    assert ours == trimmed


def _trim(seq, eos):
    """transformers pads finished beams with pad (= eos here) after their eos."""
    return seq[: seq.index(eos) + 1] if eos in seq else seq


def test_logprobs_equal_log_softmax_of_full_forward(pair):
    _, lm = pair
    prompt = _prompts([9])[0]
    config = GenerationConfig(max_new_tokens=10, logprobs=True, top_logprobs=3)
    result = generate(lm.model, prompt, config)
    full = torch.log_softmax(lm.logits(torch.tensor([prompt + result.token_ids]))[0].double(), -1)
    for step, token in enumerate(result.token_ids):
        row = full[len(prompt) - 1 + step]
        assert abs(result.logprobs[step] - row[token].item()) < 1e-4
        top = row.topk(3)
        assert [t for t, _ in result.top_logprobs[step]] == top.indices.tolist()


def test_num_return_sequences_with_seed(pair):
    _, lm = pair
    prompt = _prompts([6])[0]
    config = GenerationConfig(max_new_tokens=15, temperature=1.5, seed=7, num_return_sequences=3)
    first = [r.token_ids for r in generate_batch(lm.model, [prompt], config)]
    again = [r.token_ids for r in generate_batch(lm.model, [prompt], config)]
    assert len(first) == 3 and first == again
    assert len({tuple(t) for t in first}) > 1


def test_penalties_match_float64_reference():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 40, generator=g, dtype=torch.float64) * 3
    seen = torch.rand(3, 40, generator=g) < 0.3
    counts = torch.randint(0, 4, (3, 40), generator=g) * seen
    params = SamplingParams(repetition_penalty=1.3, presence_penalty=0.5, frequency_penalty=0.25)
    ours = apply_penalties(logits.float(), seen, counts, params).double()
    expected = logits.clone()
    for b in range(3):
        for v in range(40):
            x = expected[b, v].item()
            if seen[b, v]:
                x = x / 1.3 if x > 0 else x * 1.3
            if counts[b, v] > 0:
                x -= 0.5 + 0.25 * counts[b, v].item()
            expected[b, v] = x
    assert torch.allclose(ours, expected, atol=1e-5)


def test_min_p_matches_reference():
    logits = torch.randn(4, 30, dtype=torch.float64)
    kept = ~torch.isinf(mask_min_p(logits.float(), 0.2))
    probs = torch.softmax(logits, -1)
    assert torch.equal(kept, probs >= 0.2 * probs.max(-1, keepdim=True).values)


def test_repetition_penalty_changes_greedy_output(pair):
    _, lm = pair
    prompt = _prompts([6])[0] * 3
    plain = generate(lm.model, prompt, GenerationConfig(max_new_tokens=20)).token_ids
    penalised = generate(lm.model, prompt,
                         GenerationConfig(max_new_tokens=20, repetition_penalty=5.0)).token_ids
    assert plain != penalised
    assert len(set(penalised)) >= len(set(plain))


@pytest.mark.parametrize("options,name", [
    ({"min_p": 1.0}, "min_p"), ({"min_p": -0.1}, "min_p"),
    ({"num_beams": 0}, "num_beams"), ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ({"presence_penalty": 3.0}, "presence_penalty"), ({"top_logprobs": 21}, "top_logprobs"),
    ({"num_return_sequences": 0}, "num_return_sequences"), ({"top_k": 1.5}, "top_k"),
])
def test_more_bad_options(options, name):
    with pytest.raises(ValueError, match=name):
        GenerationConfig(**options).validate()
