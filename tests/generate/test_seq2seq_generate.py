"""Encoder-decoder generation through the one core: invariants of tiny random models.

Oracles: the model's teacher-forced forward pass (no KV cache, no cross cache) for
exhaustive search, the rules written out in the test, and batched == one by one.
Token-for-token equality with transformers' `generate` is in test_seq2seq_hf.py.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from zenlm.config import ModelConfig
from zenlm.generate import GenerationConfig, generate_batch
from zenlm.generate.beam import beam_search
from zenlm.models import build_model

FAMILIES = {
    # T5's shape: relative position bias, RMSNorm, pre-norm, unscaled scores, ReLU
    "t5": dict(positions="none", relative_buckets=8, relative_max_distance=16,
               scale_attention=False, norm="rmsnorm", activation="relu", gated_mlp=False),
    # BART's: learned positions with an offset, post-norm, embedding LayerNorm, GELU
    "bart": dict(positions="learned", position_offset=2, pre_norm=False, final_norm=False,
                 embed_norm=True, norm="layernorm", norm_bias=True, activation="gelu",
                 gated_mlp=False, qkv_bias=True, attn_out_bias=True, mlp_bias=True,
                 lm_head_bias=True),
    # Marian's: sinusoidal positions, scaled embeddings, post-norm
    "marian": dict(positions="sinusoidal", scale_embeddings=True, pre_norm=False,
                   final_norm=False, norm="layernorm", norm_bias=True, activation="silu",
                   gated_mlp=False),
}
EOS, START = 1, 0


def tiny_seq2seq(family: str, vocab: int = 24, seed: int = 0):
    """A random 2+2-layer encoder-decoder of `family`'s shape, with peaked distributions."""
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=vocab, d_model=32, n_layers=2, n_heads=4, d_ff=48,
                         max_seq_len=64, arch="encoder-decoder", n_decoder_layers=2,
                         decoder_start_token_id=START, eos_token_id=EOS, pad_token_id=START,
                         **FAMILIES[family])
    model = build_model(config).eval()
    with torch.no_grad():  # larger weights than the training init: clear argmaxes
        for name, p in model.named_parameters():
            if p.ndim >= 2 and "norm" not in name:
                p.normal_(0.0, 0.3)
    return model


SOURCES = [[5, 9, 3, 7, 2], [4, 11, 6], [8, 2, 2, 13, 5, 9, 10, 3]]


def run(model, sources, **options):
    options.setdefault("stop_token_ids", [EOS])
    return [r.token_ids for r in generate_batch(model, sources, GenerationConfig(**options))]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def model(request):
    return tiny_seq2seq(request.param)


def test_cross_cache_on_and_off_give_the_same_tokens(model):
    for options in (dict(max_new_tokens=12), dict(max_new_tokens=12, temperature=0.8, seed=3)):
        cached = run(model, SOURCES, **options)
        assert cached == run(model, SOURCES, use_cross_cache=False, **options)
    beams = dict(max_new_tokens=8, num_beams=3, num_return_sequences=3, stop_token_ids=[EOS])
    for source in SOURCES:
        on = beam_search(model, source, GenerationConfig(**beams))
        off = beam_search(model, source, GenerationConfig(use_cross_cache=False, **beams))
        assert [r.token_ids for r in on] == [r.token_ids for r in off]


def test_batched_equals_one_by_one(model):
    """Sources of different lengths (encoder padding) change no row's tokens.

    A seeded row i draws from seed + i: alone, it is given that seed.
    """
    greedy = dict(max_new_tokens=10)
    assert run(model, SOURCES, **greedy) == [run(model, [s], **greedy)[0] for s in SOURCES]
    sampled = dict(max_new_tokens=10, temperature=1.0, top_k=5)
    batched = run(model, SOURCES, seed=7, **sampled)
    assert batched == [run(model, [s], seed=7 + i, **sampled)[0] for i, s in enumerate(SOURCES)]


def test_greedy_follows_the_teacher_forced_argmax(model):
    """Each cached step picks the argmax of the uncached forward pass over the prefix."""
    for source in SOURCES:
        tokens = run(model, [source], max_new_tokens=10)[0]
        src = torch.tensor([source])
        for t in range(len(tokens)):
            tgt = torch.tensor([[START, *tokens[:t]]])
            with torch.no_grad():
                logits = model(src, tgt)[0, -1]
            assert int(logits.argmax()) == tokens[t]


def _score(model, source, tokens, rules=None) -> float:
    """Sum of float64 log-probabilities of `tokens` after `source` (teacher forcing)."""
    with torch.no_grad():
        logits = model(torch.tensor([source]), torch.tensor([[START, *tokens[:-1]]]))[0]
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    return sum(float(logprobs[t, token]) for t, token in enumerate(tokens))


@pytest.mark.parametrize("n_gram", [0, 2])
def test_wide_beam_finds_the_best_sequence(n_gram):
    """num_beams >= V^(T-1) with length_penalty 0 is exact: beam == exhaustive search."""
    vocab, steps = 4, 3
    model = tiny_seq2seq("marian", vocab=vocab, seed=1)
    source = [2, 3, 2, 3, 3]
    candidates = []
    for length in range(1, steps + 1):
        for tokens in itertools.product(range(vocab), repeat=length):
            ended = tokens[-1] == EOS
            if EOS in tokens[:-1] or (length < steps and not ended):
                continue
            if n_gram and _has_repeat([START, *tokens], n_gram):
                continue
            candidates.append((_score(model, source, list(tokens)), list(tokens)))
    best = max(candidates)[1]
    config = GenerationConfig(max_new_tokens=steps, num_beams=vocab ** (steps - 1),
                              length_penalty=0.0, stop_token_ids=[EOS],
                              no_repeat_ngram_size=n_gram)
    assert beam_search(model, source, config)[0].token_ids == best


def _has_repeat(tokens, n) -> bool:
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) != len(set(grams))


def test_min_new_tokens_forbids_stopping_early(model):
    stops = list(range(20))  # 20..23 are the only tokens that do not stop
    free = run(model, SOURCES, max_new_tokens=12, stop_token_ids=stops)
    assert any(len(t) < 5 for t in free)
    for tokens in run(model, SOURCES, max_new_tokens=12, stop_token_ids=stops,
                      min_new_tokens=4):
        assert len(tokens) >= 5 and not set(tokens[:4]) & set(stops), tokens


def test_no_repeat_ngram_size(model):
    for size in (1, 2, 3):
        for tokens in run(model, SOURCES, max_new_tokens=14, no_repeat_ngram_size=size):
            assert not _has_repeat([START, *tokens], size), (size, tokens)


def test_forced_bos_and_eos(model):
    rows = run(model, SOURCES, max_new_tokens=6, forced_bos_token_id=17,
               forced_eos_token_id=EOS)
    for tokens in rows:
        assert tokens[0] == 17 and tokens[-1] == EOS and len(tokens) <= 6
    one = run(model, SOURCES, max_new_tokens=1, forced_bos_token_id=17, forced_eos_token_id=EOS)
    assert one == [[EOS]] * len(SOURCES)  # as in transformers, forced EOS wins at one token


def test_beam_forced_step_adds_nothing_to_the_score():
    """A forced token's log-probability counts as 0 (transformers' processors)."""
    model = tiny_seq2seq("t5", vocab=6, seed=2)
    config = GenerationConfig(max_new_tokens=3, num_beams=36, length_penalty=0.0,
                              stop_token_ids=[EOS], forced_bos_token_id=4)
    best = beam_search(model, [2, 5, 3], config)[0].token_ids
    assert best[0] == 4
    tails = [list(t) for n in (1, 2) for t in itertools.product(range(6), repeat=n)
             if (t[-1] == EOS or n == 2) and EOS not in t[:-1]]
    scores = {tuple(t): _score(model, [2, 5, 3], [4, *t]) - _score(model, [2, 5, 3], [4])
              for t in tails}
    assert tuple(best[1:]) == max(scores, key=scores.get)


def test_rules_are_validated():
    for bad in (dict(min_new_tokens=-1), dict(no_repeat_ngram_size=1.5),
                dict(forced_bos_token_id=-2), dict(forced_eos_token_id="x")):
        name = next(iter(bad))
        with pytest.raises(ValueError, match=name):
            GenerationConfig(**bad).validate()
    model = tiny_seq2seq("t5")
    with pytest.raises(ValueError, match=r"forced_bos_token_id must be a token id in \[0, 24\)"):
        run(model, SOURCES, forced_bos_token_id=24)


def test_rules_apply_to_a_decoder_only_model_too():
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=16, d_model=32, n_layers=2, n_heads=4, d_ff=48,
                         max_seq_len=64)
    decoder = build_model(config).eval()
    with torch.no_grad():
        for p in decoder.parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.3)
    prompt = [3, 4, 5]
    tokens = run(decoder, [prompt], max_new_tokens=12, no_repeat_ngram_size=2,
                 forced_bos_token_id=9, forced_eos_token_id=2)[0]
    assert tokens[0] == 9 and tokens[-1] == 2 and not _has_repeat(prompt + tokens, 2)
    assert math.isfinite(len(tokens))
