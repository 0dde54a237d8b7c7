"""LoRA: merged equals unmerged; adapters save alone, load and merge to the same logits."""

from __future__ import annotations

import pytest
import torch

from zenlm.config import ModelConfig
from zenlm.errors import CheckpointError
from zenlm.models import build_model
from zenlm.nn.lora import (
    LoRALinear,
    adapter_state,
    apply_lora,
    load_adapters,
    merge_lora,
    save_adapters,
    unmerge_lora,
)


def _tiny_llama(seed=0):
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                         d_ff=48, max_seq_len=64, tie_embeddings=True)
    return build_model(config).eval()


def _trained_adapters(model):
    """Give B non-zero values, as training would (B starts at zero)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("lora_b"):
                param.normal_(0, 0.1)


def test_only_adapters_train_and_names_are_kept():
    model = _tiny_llama()
    names_before = set(model.state_dict())
    adapted = apply_lora(model, rank=4, alpha=8, target_modules=("q", "v"))
    assert adapted == ["blocks.0.attn.q", "blocks.0.attn.v", "blocks.1.attn.q", "blocks.1.attn.v"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{n}.{p}" for n in adapted for p in ("lora_a", "lora_b")}
    assert names_before <= set(model.state_dict())  # HF saving still finds every weight
    assert isinstance(model.blocks[0].attn.q, LoRALinear)


def test_fresh_adapter_is_identity_and_merge_equals_unmerged():
    model = _tiny_llama()
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        base = model(ids)
        apply_lora(model, rank=4, alpha=8, dropout=0.1, target_modules=("q", "k", "v", "o", "up"))
        assert torch.allclose(model(ids), base, atol=1e-6)
        _trained_adapters(model)
        unmerged = model(ids)
        assert (unmerged - base).abs().max() > 1e-3
        merge_lora(model)
        merged = model(ids)
        unmerge_lora(model)
        again = model(ids)
    assert (merged - unmerged).abs().max().item() <= 1e-5
    assert (again - unmerged).abs().max().item() <= 1e-5


def test_adapters_save_load_merge_same_logits(tmp_path):
    model = _tiny_llama()
    apply_lora(model, rank=4, alpha=8, target_modules=("q", "v", "down"))
    _trained_adapters(model)
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        expected = model(ids)
    path = save_adapters(model, tmp_path / "adapter.safetensors")
    assert path.stat().st_size < 40_000  # adapters only, not the base weights
    fresh = _tiny_llama()  # the same base weights (same seed)
    config = load_adapters(fresh, path)
    assert config.rank == 4 and config.target_modules == ("q", "v", "down")
    with torch.no_grad():
        loaded = fresh(ids)
        merge_lora(fresh)
        merged = fresh(ids)
    assert (loaded - expected).abs().max().item() <= 1e-5
    assert (merged - expected).abs().max().item() <= 1e-5
    assert set(adapter_state(fresh)) == set(adapter_state(model))


def test_errors(tmp_path):
    model = _tiny_llama()
    with pytest.raises(ValueError, match="no nn.Linear named"):
        apply_lora(model, target_modules=("query",))
    with pytest.raises(ValueError, match="tied"):
        apply_lora(_tiny_llama(), target_modules=("lm_head",))
    apply_lora(model, rank=2, target_modules=("q",))
    path = save_adapters(model, tmp_path / "a.safetensors")
    other = _tiny_llama()
    apply_lora(other, rank=2, target_modules=("v",))
    with pytest.raises(CheckpointError, match="adapters do not fit"):
        load_adapters(other, path)
