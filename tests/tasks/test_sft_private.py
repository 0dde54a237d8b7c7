"""`zenlm finetune --task sft --dp-epsilon E`: DP-SGD instruction tuning of a tiny decoder.

Oracles: each conversation's gradient from its own plain autograd backward (no hooks), of
its loss written out here in float64 from the decoder's ordinary forward pass; Opacus's
own `RDPAccountant` for the epsilon of the recorded noise, sample rate and steps.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import tokenizers
import torch
from opacus.accountants import RDPAccountant

from zenlm.cli import main
from zenlm.config import ModelConfig
from zenlm.io.hf import save_hf_model
from zenlm.models import build_model
from zenlm.nn.lora import LoRALinear, apply_lora
from zenlm.tasks.sft import SPEC, SFTFeature, collate_sft, pack
from zenlm.tokenizer import Tokenizer
from zenlm.train.config import OptimConfig
from zenlm.train.privacy import PrivateTraining, plan_privacy
from zenlm.train.trainer import adamw

IGNORE = -100
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_decoder(vocab: int = 40, *, lora: bool = False) -> torch.nn.Module:
    """A 2-block Llama-style decoder (RMSNorm, RoPE, SwiGLU, GQA) with a tied LM head."""
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=vocab, d_model=16, n_layers=2, n_heads=4, n_kv_heads=2,
                         d_ff=32, max_seq_len=64, tie_embeddings=True, hf_model_type="llama")
    model = build_model(config).double()
    if lora:
        apply_lora(model, rank=2, alpha=4.0, dropout=0.0, target_modules=["q", "v", "down"])
        for module in model.modules():  # B starts at 0, which would make A's gradient 0
            if isinstance(module, LoRALinear):
                torch.nn.init.normal_(module.lora_b, std=0.5)
        model.double()
    return model


def conversations() -> list[SFTFeature]:
    """Five token sequences of different lengths; labels on the 'assistant' tail only.

    The last one has no assistant token at all (a conversation cut before its reply).
    """
    gen = torch.Generator().manual_seed(1)
    rows = []
    for i, length in enumerate((6, 11, 8, 14, 5)):
        ids = torch.randint(1, 40, (length,), generator=gen).tolist()
        prompt = length if i == 4 else 2 + i
        rows.append(SFTFeature(ids, [IGNORE] * prompt + ids[prompt:]))
    return rows


def own_loss(model: torch.nn.Module, feature: SFTFeature) -> torch.Tensor:
    """One conversation alone: mean next-token cross-entropy over its assistant tokens.

    Written out in float64 from the decoder's ordinary forward (no padding, no packing);
    the label of token t is predicted at position t-1, and the first token predicts none.
    """
    ids = torch.tensor([feature.ids])
    logprobs = model(ids)[0].double().log_softmax(-1)  # (T, V)
    terms = [-logprobs[t - 1, feature.ids[t]] for t in range(1, len(feature.ids))
             if feature.labels[t] != IGNORE]
    return torch.stack(terms).mean() if terms else logprobs.sum() * 0.0


@pytest.mark.parametrize("setting", ["full-tied", "lora"])
def test_per_example_gradients_equal_each_conversation_alone(setting):
    model = tiny_decoder(lora=setting == "lora")
    rows = conversations()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert (model.lm_head.weight is model.embed.weight) and ("embed.weight" in trainable) == (
        setting == "full-tied")
    oracle, losses = [], []
    for row in rows:  # one plain backward per conversation
        model.zero_grad()
        loss = own_loss(model, row)
        loss.backward()
        losses.append(float(loss.detach()))
        oracle.append({n: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                       for n, p in trainable.items()})
    model.zero_grad()
    privacy = PrivateTraining(plan_privacy(8.0, 1e-5, 1.0, batch_size=5, dataset_size=1000,
                                           steps=10), secret=bytes(32), clipping="exact")
    privacy.transform_model(model)  # Opacus's hooks; a tied head and RMSNorm pass the check
    privacy.make_optimizer(adamw)(model, OptimConfig(lr=1e-3))
    model.train()
    each = SPEC.private_objective()(model, collate_sft(rows, pad_id=0))  # padded, one pass
    torch.testing.assert_close(each.detach(), torch.tensor(losses, dtype=each.dtype),
                               rtol=1e-6, atol=1e-12)
    each.mean().backward()
    for name, param in trainable.items():
        assert param.grad_sample.shape == (len(rows), *param.shape), name
        for i in range(len(rows)):
            # RMSNorm and LoRA grad samplers compute in float32, the rest in float64
            torch.testing.assert_close(param.grad_sample[i].double(), oracle[i][name],
                                       rtol=1e-5, atol=1e-8, msg=f"{name}, conversation {i}")
    nonzero = [n for n in trainable if float(oracle[0][n].abs().max()) > 1e-6]
    assert sorted(nonzero) == sorted(trainable)  # every trainable weight is really checked
    assert all(float(g.abs().max()) == 0 for g in oracle[4].values())  # no assistant token


def test_a_packed_row_is_refused_by_the_private_loss():
    rows = conversations()
    with pytest.raises(ValueError, match="several packed conversations"):
        SPEC.private_objective()(tiny_decoder(), collate_sft(pack(rows, 64), pad_id=0))


# --------------------------------------------------------------- through the CLI
def chat_model(folder: Path, words: list[str]) -> Path:
    """A tiny random tied decoder and a word-level ChatML tokenizer, saved as an HF folder."""
    specials = ["[PAD]", "[UNK]", "<|im_start|>", "<|im_end|>"]
    vocab = {w: i for i, w in enumerate([*specials, *sorted(set(words))])}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    backend.add_special_tokens(specials)
    tokenizer = Tokenizer(backend, eos_token="<|im_end|>", pad_token="[PAD]",
                          chat_template=TEMPLATE)
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=len(vocab), d_model=16, n_layers=2, n_heads=2, d_ff=32,
                         max_seq_len=64, tie_embeddings=True, hf_model_type="llama")
    save_hf_model(build_model(config), folder, tokenizer)
    return folder


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory) -> tuple[Path, Path, Path, int]:
    """(model folder, train file, val file, training conversations); one is very long."""
    tmp = tmp_path_factory.mktemp("sft_dp")
    pairs = [(f"count to {i}", " ".join(map(str, range(i % 9 + 1)))) for i in range(40)]
    pairs[3] = ("count to 60", " ".join(map(str, range(60))))  # > --max-length tokens
    lines = [json.dumps({"messages": [{"role": "user", "content": u},
                                      {"role": "assistant", "content": a}]}) for u, a in pairs]
    train, val = tmp / "train.jsonl", tmp / "val.jsonl"
    train.write_text("\n".join(lines[:32]) + "\n", encoding="utf-8")
    val.write_text("\n".join(lines[32:]) + "\n", encoding="utf-8")
    words = [w for u, a in pairs for w in f"{u} {a} user assistant".split()]
    return chat_model(tmp / "base", words), train, val, 32


def finetune(model: Path, train: Path, val: Path, out: Path, *flags: str) -> int:
    return main(["finetune", "--task", "sft", "--model", str(model), "--train", str(train),
                 "--val", str(val), "--output", str(out), "--max-steps", "4",
                 "--batch-size", "8", "--max-length", "32", "--lr", "1e-2", *flags])


@pytest.mark.parametrize("method", ["lora", "full"])
def test_private_sft_through_the_cli_reports_opacus_epsilon(chat_data, tmp_path, capsys,
                                                            caplog, method):
    model, train, val, n = chat_data
    flags = ["--lora", "--lora-dropout", "0"] if method == "lora" else []
    with caplog.at_level(logging.WARNING, logger="zenlm.tasks.sft"):
        assert finetune(model, train, val, tmp_path, *flags, "--dp-epsilon", "8",
                        "--dp-delta", "1e-3", "--autocast", "bfloat16",
                        "--dp-physical-batch", "3") == 0  # draws computed in pieces
    assert [r.message for r in caplog.records if "not packed" in r.message]  # one log line
    summary = json.loads(capsys.readouterr().out)
    record = json.loads((tmp_path / "model" / "privacy.json").read_text())
    oracle = RDPAccountant()
    for _ in range(record["steps"]):
        oracle.step(noise_multiplier=record["noise_multiplier"],
                    sample_rate=record["sample_rate"])
    assert record["epsilon"] == pytest.approx(oracle.get_epsilon(delta=1e-3), rel=1e-9)
    assert abs(record["epsilon"] - 8.0) <= 0.011  # the planned budget, all spent
    # one privacy unit per conversation: the long one is truncated as one unit, not split
    assert (record["steps"], record["dataset_size"], record["sample_rate"]) == (4, n, 8 / n)
    assert "secret" not in json.dumps(record)
    assert summary["dp"]["epsilon"] == record["epsilon"]
    assert summary["validation"]["tokens"] > 0


def test_bad_private_sft_settings_are_one_clear_error(chat_data, tmp_path, capsys):
    model, train, val, _ = chat_data
    assert finetune(model, train, val, tmp_path, "--lora", "--lora-dropout", "0.1",
                    "--dp-epsilon", "8", "--dp-delta", "1e-3") == 2
    assert "--lora-dropout 0" in capsys.readouterr().err
    assert finetune(model, train, val, tmp_path, "--lora", "--lora-dropout", "0",
                    "--dp-epsilon", "8", "--dp-delta", "0.05") == 2
    assert "--dp-delta must be in (0, 1/N)" in capsys.readouterr().err
