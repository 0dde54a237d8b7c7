"""The CPU attention kernels installed for inference: where they are, and that models
running them still match transformers (decoders) and their own invariants (T5-style
encoder-decoders, whose position bias is the mask)."""

from __future__ import annotations

import pytest
import torch

import zenlm
from zenlm.config import ModelConfig
from zenlm.models import build_model
from zenlm.nn import Attention
from zenlm.nn import cpu_attention as cpu
from zenlm.nn.attention import sdpa

from .tiny_hf import VOCAB, tiny_hf_model

transformers = pytest.importorskip("transformers")


def kernels(model: torch.nn.Module) -> set:
    return {m.kernel for m in model.modules() if isinstance(m, Attention)}


def _hf_logits(hf, ids):
    with torch.no_grad():
        return hf(ids).logits


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama")
    hf = tiny_hf_model("llama")
    hf.save_pretrained(folder)
    return folder, hf


def test_installed_for_inference_absent_for_training(llama_folder):
    folder, _ = llama_folder
    assert kernels(zenlm.load(folder).model) == {cpu.cpu_attention}  # generate, serve, bench
    assert kernels(zenlm.load(folder, dtype="bfloat16").model) == {cpu.cpu_attention}
    # finetune and export load the weights as stored; pretraining builds the model.
    assert kernels(zenlm.load(folder, quantize=None).model) == {sdpa}
    config = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=1, n_heads=4, d_ff=64)
    assert kernels(build_model(config)) == {sdpa}


@pytest.mark.parametrize("family", ["llama", "llama-tied-mqa", "mistral", "gpt2"])
def test_prepared_model_decodes_ragged_rows_like_transformers(family, tmp_path):
    """A right-padded prefill of two prompts, then decode steps with each row at its own
    length (small-query kernel, masks from cache slots): each row's logits are its
    logits alone in transformers."""
    hf = tiny_hf_model(family)
    hf.save_pretrained(tmp_path)
    model = zenlm.load(tmp_path, quantize="none").model  # fused float32
    assert kernels(model) == {cpu.cpu_attention}
    prompt_lens, steps = [9, 4], 8
    rows = [torch.randint(3, VOCAB, (n + steps,)) for n in prompt_lens]
    ids = torch.zeros(2, max(prompt_lens), dtype=torch.long)
    padding = torch.zeros_like(ids)
    for b, n in enumerate(prompt_lens):
        ids[b, :n], padding[b, :n] = rows[b][:n], 1
    cache = model.new_cache(2, 32)
    with torch.no_grad():
        first = model(ids, attention_mask=padding, cache=cache)
        cache.set_lengths(prompt_lens)
        logits = [[first[b, n - 1]] for b, n in enumerate(prompt_lens)]
        for t in range(steps - 1):
            step = torch.stack([rows[b][n + t] for b, n in enumerate(prompt_lens)])[:, None]
            out = model.step(step, cache)  # (2, 1, V)
            for b in range(2):
                logits[b].append(out[b, 0])
    for b, n in enumerate(prompt_lens):
        expected = _hf_logits(hf, rows[b][None])[0, n - 1:n + steps - 1]
        diff = (torch.stack(logits[b]) - expected).abs().max().item()
        assert diff <= 1e-4, f"{family} row {b}: max |logit diff| {diff}"


def test_bfloat16_model_takes_the_blocked_path_and_stays_close(llama_folder, monkeypatch):
    """bf16 mode: a prompt past one query block goes through the blocked kernel, decode
    steps read keys in multiples of 64 slots; logits stay within bfloat16 rounding of
    transformers' float32 ones."""
    folder, hf = llama_folder
    calls = []
    blocked = cpu.blocked_causal_attention
    monkeypatch.setattr(cpu, "blocked_causal_attention",
                        lambda *a, **kw: calls.append(a[0].shape) or blocked(*a, **kw))
    model = zenlm.load(folder, quantize="bf16").model
    ids = torch.randint(3, VOCAB, (1, cpu.QUERY_BLOCK + 20))
    prompt = cpu.QUERY_BLOCK + 10
    cache = model.new_cache(1, ids.shape[1])
    with torch.no_grad():
        ours = [model(ids[:, :prompt], cache=cache)[0, -1]]
        ours += [model.step(ids[:, t:t + 1], cache)[0, -1] for t in range(prompt, ids.shape[1])]
    assert len(calls) == len(model.blocks)  # the prefill, every layer
    expected = _hf_logits(hf, ids)[0, prompt - 1:]
    ours = torch.stack(ours).float()
    relative = ((ours - expected).norm() / expected.norm()).item()
    assert relative < 0.05, f"bf16 relative error {relative}"


T5_LIKE = dict(
    vocab_size=VOCAB, d_model=32, n_layers=2, n_decoder_layers=2, n_heads=4, d_ff=64,
    arch="encoder-decoder", positions="none", relative_buckets=8, relative_max_distance=16,
    scale_attention=False, gated_mlp=False, activation="relu", tie_embeddings=True,
    scale_output=True, decoder_start_token_id=0, pad_token_id=0, hf_model_type="t5",
)


@pytest.fixture(scope="module")
def t5_like():
    torch.manual_seed(0)
    model = build_model(ModelConfig(**T5_LIKE)).eval()
    with torch.no_grad():  # a visible position bias
        for module in model.modules():
            if hasattr(module, "bidirectional"):
                module.weight.normal_(0, 1.0)
    return model


@pytest.mark.parametrize("kernel", [sdpa, cpu.cpu_attention])
def test_seq2seq_cached_decoding_equals_teacher_forcing(t5_like, kernel):
    """Decoding target tokens one by one (bias added to slot masks, ragged source padding
    through cross-attention) equals the training forward with the default kernel."""
    src = torch.randint(3, VOCAB, (2, 7))
    src_mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    tgt = torch.randint(3, VOCAB, (2, 6))
    cpu.use_cpu_attention(t5_like, kernel=sdpa)
    with torch.no_grad():
        expected = t5_like(src, tgt, src_mask=src_mask)  # (2, 6, V)
        cpu.use_cpu_attention(t5_like, kernel=kernel)
        cache = t5_like.start_cache(src, src_mask, max_len=8)
        steps = [t5_like.step(tgt[:, :2], cache)]
        steps += [t5_like.step(tgt[:, t:t + 1], cache) for t in range(2, 6)]
    cpu.use_cpu_attention(t5_like, kernel=sdpa)
    assert torch.allclose(torch.cat(steps, dim=1), expected, atol=1e-5)


def test_seq2seq_source_padding_changes_nothing(t5_like):
    """The encoder's bias carries its padding mask: padded sources give the same logits."""
    src, tgt = torch.randint(3, VOCAB, (1, 5)), torch.randint(3, VOCAB, (1, 4))
    padded = torch.cat([src, torch.randint(3, VOCAB, (1, 3))], dim=1)
    mask = torch.tensor([[1] * 5 + [0] * 3])
    with torch.no_grad():
        alone = t5_like(src, tgt)
        with_padding = t5_like(padded, tgt, src_mask=mask)
    assert torch.allclose(alone, with_padding, atol=1e-5)
