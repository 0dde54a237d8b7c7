"""Encoder-decoder generation is token for token transformers' `generate`.

Tiny random Marian, BART and T5 models are saved by transformers and loaded by
`zenlm.load` (the production folder code); both then generate from the same sources
with the same settings. The stop token is chosen per source from the model's own
greedy output, so that stopping, `min_new_tokens` and beams that end early all happen.
"""

from __future__ import annotations

import pytest
import torch

import zenlm

from ..models.tiny_hf import randomize

transformers = pytest.importorskip("transformers")

VOCAB, PAD, START = 64, 0, 0
SIZES = dict(vocab_size=VOCAB, pad_token_id=PAD, eos_token_id=1, decoder_start_token_id=START)


def _config(family: str):  # noqa: ANN202
    if family == "marian":
        return transformers.MarianConfig(
            **SIZES, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48,
            max_position_embeddings=64, scale_embedding=True, forced_eos_token_id=None)
    if family == "bart":
        return transformers.BartConfig(
            **SIZES, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48,
            max_position_embeddings=64, bos_token_id=2, forced_eos_token_id=None)
    return transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2,
        num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=16,
        pad_token_id=PAD, eos_token_id=1, decoder_start_token_id=START)


@pytest.fixture(scope="module", params=["marian", "bart", "t5"])
def pair(request, tmp_path_factory):
    """(transformers model, zenlm LM loaded from the folder transformers saved)."""
    hf = transformers.AutoModelForSeq2SeqLM.from_config(
        _config(request.param), attn_implementation="eager")
    randomize(hf, seed=7)
    with torch.no_grad():
        for module in hf.modules():  # fixed sinusoidal tables are not weights: restore them
            if hasattr(module, "create_weight"):
                module.weight.copy_(module.create_weight())
    folder = tmp_path_factory.mktemp(request.param)
    hf.eval().save_pretrained(folder)
    return hf, zenlm.load(folder, quantize=None)


SOURCES = [[5, 9, 3, 7, 2, 1], [4, 11, 6, 1], [8, 2, 2, 13, 5, 9, 10, 3, 1]]


def hf_generate(hf, sources, **settings) -> list[list[int]]:
    """transformers' tokens per row (start token dropped, cut after the first EOS)."""
    ids = torch.full((len(sources), max(map(len, sources))), PAD)
    mask = torch.zeros_like(ids)
    for row, source in enumerate(sources):
        ids[row, : len(source)] = torch.tensor(source)
        mask[row, : len(source)] = 1
    eos = settings.pop("eos")
    config = transformers.GenerationConfig(**{
        "do_sample": False, "eos_token_id": eos, "pad_token_id": PAD,
        "decoder_start_token_id": START, "bos_token_id": None, "forced_eos_token_id": None,
        "forced_bos_token_id": None, **settings})
    with torch.no_grad():
        out = hf.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    rows = []
    for row in out[:, 1:].tolist():
        rows.append(row[: row.index(eos) + 1] if eos in row else row)
    return rows


def ours(lm, sources, **settings) -> list[list[int]]:
    eos = settings.pop("eos")
    return [c.result.token_ids for c in lm.complete(sources, stop_token_ids=[eos], **settings)]


_EOS: dict[tuple, int] = {}


def _eos_for(hf, source, early: bool = False) -> int:
    """`_choose_eos`, once per model and source."""
    key = (id(hf), tuple(source), early)
    if key not in _EOS:
        _EOS[key] = _choose_eos(hf, source, early)
    return _EOS[key]


def _choose_eos(hf, source, early: bool) -> int:
    """A stop token that fires mid-sequence: of the tokens in the model's best 4 beams,
    the one that appears first latest (random models repeat tokens, so their first
    step's likely tokens would end every sequence at once, or never). `early`: the
    greedy first token instead, the one `min_new_tokens` has to hold back."""
    if early:
        return hf_generate(hf, [source], eos=-1, max_new_tokens=1)[0][0]
    beams = hf_generate(hf, [source], eos=-1, max_new_tokens=10, num_beams=4,
                        num_return_sequences=4)
    first: dict[int, int] = {}
    for row in beams:
        for step, token in enumerate(row):
            first[token] = min(first.get(token, step), step)
    return max(first, key=lambda token: (first[token], token))


SETTINGS = {
    "greedy": dict(max_new_tokens=12),
    "beam4": dict(max_new_tokens=10, num_beams=4, num_return_sequences=4),
    "beam4-lp-early": dict(max_new_tokens=10, num_beams=4, length_penalty=0.6,
                           early_stopping=True, num_return_sequences=2),
    "beam3-lp2": dict(max_new_tokens=9, num_beams=3, length_penalty=2.0),
    "no-repeat": dict(max_new_tokens=14, no_repeat_ngram_size=2),
    "beam-no-repeat": dict(max_new_tokens=10, num_beams=4, no_repeat_ngram_size=3),
    "min-new": dict(max_new_tokens=10, min_new_tokens=6, early=True),
    "beam-min-new": dict(max_new_tokens=10, num_beams=3, min_new_tokens=5, early=True),
    "forced": dict(max_new_tokens=7, forced_bos_token_id=17, forced_eos_token_id=23),
    "beam-forced": dict(max_new_tokens=7, num_beams=3, forced_bos_token_id=17,
                        forced_eos_token_id=23),
}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_one_source_at_a_time(pair, name):
    hf, lm = pair
    for source in SOURCES:
        settings = dict(SETTINGS[name])
        settings["eos"] = _eos_for(hf, source, settings.pop("early", False))
        assert ours(lm, [source], **settings) == hf_generate(hf, [source], **settings), source


@pytest.mark.parametrize("name", ["greedy", "no-repeat", "min-new", "forced"])
def test_batched_sources_of_different_lengths(pair, name):
    hf, lm = pair
    settings = dict(SETTINGS[name])
    settings["eos"] = _eos_for(hf, SOURCES[0], settings.pop("early", False))
    assert ours(lm, SOURCES, **settings) == hf_generate(hf, SOURCES, **settings)


def test_cross_cache_off_matches_too(pair):
    hf, lm = pair
    settings = dict(SETTINGS["beam4"], eos=_eos_for(hf, SOURCES[2]))
    expected = hf_generate(hf, [SOURCES[2]], **settings)
    assert ours(lm, [SOURCES[2]], use_cross_cache=False, **settings) == expected
