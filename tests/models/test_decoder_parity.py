"""Decoder logits equal transformers' for tiny random copies of each family,
loaded through the production converter (zenlm.load on a saved HF folder)."""

from __future__ import annotations

import pytest
import torch

import zenlm
from zenlm.io.hf import save_hf_model

from .tiny_hf import VOCAB, tiny_configs, tiny_hf_model

transformers = pytest.importorskip("transformers")
FAMILIES = sorted(tiny_configs())
TOL = 1e-4


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request, tmp_path_factory):
    """(family, transformers model, zenlm LM loaded from its saved folder)."""
    hf = tiny_hf_model(request.param)
    folder = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(folder)
    return request.param, hf, zenlm.load(folder, quantize=None)


def _hf_logits(hf, ids, mask=None):
    position_ids = None
    if mask is not None:  # transformers counts positions from the slot, not the first real token
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return hf(ids, attention_mask=mask, position_ids=position_ids).logits


def test_logits_match_unpadded(pair):
    _, hf, lm = pair
    ids = torch.randint(3, VOCAB, (3, 40))
    diff = (lm.logits(ids) - _hf_logits(hf, ids)).abs().max().item()
    assert diff <= TOL, f"max |logit diff| {diff}"


@pytest.mark.parametrize("side", ["left", "right"])
def test_logits_match_padded_batch(pair, side):
    _, hf, lm = pair
    lengths = [40, 23, 7]
    ids = torch.full((3, 40), 0, dtype=torch.long)
    mask = torch.zeros(3, 40, dtype=torch.long)
    for row, n in enumerate(lengths):
        span = slice(40 - n, 40) if side == "left" else slice(0, n)
        ids[row, span] = torch.randint(3, VOCAB, (n,))
        mask[row, span] = 1
    ours = lm.logits(ids, attention_mask=mask)
    theirs = _hf_logits(hf, ids, mask)
    real = mask.bool()
    diff = (ours[real] - theirs[real]).abs().max().item()
    assert diff <= TOL, f"max |logit diff| on real tokens {diff}"
    # And each padded row equals the same sequence run alone, unpadded.
    for row in range(len(lengths)):
        alone = lm.logits(ids[row][mask[row].bool()][None])
        assert torch.allclose(ours[row][mask[row].bool()], alone[0], atol=TOL)


def test_zenlm_save_transformers_load(pair, tmp_path):
    _, hf, lm = pair
    save_hf_model(lm.model, tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    ids = torch.randint(3, VOCAB, (2, 30))
    diff = (_hf_logits(reloaded, ids) - lm.logits(ids)).abs().max().item()
    assert diff <= TOL
    assert type(reloaded) is type(hf)


def test_zenlm_save_zenlm_load_is_exact(pair, tmp_path):
    _, _, lm = pair
    save_hf_model(lm.model, tmp_path)
    again = zenlm.load(tmp_path, quantize=None)
    ids = torch.randint(3, VOCAB, (2, 30))
    assert torch.equal(again.logits(ids), lm.logits(ids))


def test_cached_decoding_equals_full_forward(pair):
    """Feeding tokens one at a time through the KV cache gives the full pass's logits."""
    _, _, lm = pair
    ids = torch.randint(3, VOCAB, (2, 24))
    full = lm.logits(ids)
    cache = lm.model.new_cache(batch=2, max_len=24)
    with torch.no_grad():
        steps = [lm.model(ids[:, :10], cache=cache)]
        steps += [lm.model(ids[:, t:t + 1], cache=cache) for t in range(10, 24)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_future_tokens_do_not_change_the_past(pair):
    _, _, lm = pair
    ids = torch.randint(3, VOCAB, (1, 30))
    changed = ids.clone()
    changed[0, 20:] = torch.randint(3, VOCAB, (10,))
    assert torch.allclose(lm.logits(ids)[:, :20], lm.logits(changed)[:, :20], atol=1e-6)


def test_bf16_load_is_close_to_fp32(pair, tmp_path):
    family, hf, lm = pair
    hf.save_pretrained(tmp_path)
    lm16 = zenlm.load(tmp_path, dtype="bfloat16")
    assert lm16.model.embed.weight.dtype == torch.bfloat16
    ids = torch.randint(3, VOCAB, (1, 16))
    ref = lm.logits(ids)
    rel = (lm16.logits(ids) - ref).norm() / ref.norm()
    assert rel < 0.05, f"{family}: bf16 relative error {rel}"
