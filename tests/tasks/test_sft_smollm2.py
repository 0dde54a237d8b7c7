"""SmolLM2 instruction tuning pieces on alpaca records: assistant-only labels with the real
chat template, and a LoRA adapter that saves, loads and merges to the same logits."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

import zenlm
from zenlm.nn.lora import apply_lora, load_adapters, lora_layers, merge_lora, save_adapters
from zenlm.tasks.sft import IGNORE, collate_sft, encode_conversation, pack, sft_loss


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    return zenlm.load(smollm2_gguf, quantize=None)


def _alpaca(shared_data, n):
    from zenlm.data.tasks import read_chat

    return read_chat(shared_data / "alpaca" / "alpaca_5k.jsonl")[:n]


def test_only_assistant_tokens_carry_loss(smollm2, shared_data):
    tokenizer = smollm2.tokenizer
    for example in _alpaca(shared_data, 5):
        feature = encode_conversation(tokenizer, example.messages, max_length=4096)
        labelled = [t for t in feature.labels if t != IGNORE]
        reply = example.messages[-1]["content"]
        assert tokenizer.decode(labelled) == f"{reply}<|im_end|>\n"
        prompt = tokenizer.decode([i for i, lab in zip(feature.ids, feature.labels, strict=True)
                                   if lab == IGNORE])
        assert example.messages[0]["content"] in prompt and reply not in prompt


def test_lora_adapter_save_load_merge_same_logits(smollm2, shared_data, tmp_path):
    model = smollm2.model
    apply_lora(model, rank=4, alpha=8, target_modules=("q", "v"))
    try:
        with torch.no_grad():
            for layer in lora_layers(model).values():
                layer.lora_b.normal_(0, 0.02)
        features = [encode_conversation(smollm2.tokenizer, e.messages, max_length=96)
                    for e in _alpaca(shared_data, 3)]
        batch = collate_sft(pack(features, 200), pad_id=0)
        ids = batch.ids[:, :64]
        with torch.no_grad():
            expected = model(ids)
            assert torch.isfinite(sft_loss(model, batch))
        path = save_adapters(model, tmp_path / "adapter.safetensors")
        with torch.no_grad():
            for layer in lora_layers(model).values():
                layer.lora_b.zero_()
        load_adapters(model, path)
        with torch.no_grad():
            loaded = model(ids)
            merge_lora(model)
            merged = model(ids)
        assert (loaded - expected).abs().max().item() <= 1e-5
        # Merging reorders fp32 sums (x @ (W + BA) vs x @ W + x @ BA) in 30 layers: measured
        # 8.8e-5 absolute on logits up to 39, i.e. 2e-6 relative. Tiny models: 1e-5 absolute.
        assert (merged - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()
        with safe_open(str(path), "pt") as handle:
            assert json.loads(handle.metadata()["zenlm_lora"])["rank"] == 4
            assert len(list(handle.keys())) == 2 * 2 * smollm2.config.n_layers  # adapters only
    finally:
        smollm2.model = None  # the module-scoped model now carries adapters; do not reuse


def test_lora_merge_equals_unmerged_to_1e5_in_float64(smollm2_gguf, shared_data):
    """Merging is exact arithmetic: in float64 (no fp32 reordering noise) the real model's
    merged and unmerged logits agree to 1e-5 absolute."""
    lm = zenlm.load(smollm2_gguf, dtype=torch.float64)
    model = lm.model
    apply_lora(model, rank=4, alpha=8, target_modules=("q", "v", "o", "gate", "up", "down"))
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_b.normal_(0, 0.02)
    example = _alpaca(shared_data, 1)[0]
    ids = torch.tensor([encode_conversation(lm.tokenizer, example.messages, max_length=64).ids])
    with torch.no_grad():
        unmerged = model(ids)
        merge_lora(model)
        merged = model(ids)
    base = zenlm.load(smollm2_gguf, dtype=torch.float64).model
    with torch.no_grad():
        assert (unmerged - base(ids)).abs().max().item() > 1e-2  # the adapters do change logits
    assert (merged - unmerged).abs().max().item() <= 1e-5
