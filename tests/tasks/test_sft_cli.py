"""`zenlm finetune --task sft --lora` end to end on a tiny random Llama with a ChatML template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tokenizers
import torch
import torch.nn.functional as F

import zenlm
from zenlm.cli import main
from zenlm.config import ModelConfig
from zenlm.io.hf import save_hf_model
from zenlm.models import build_model
from zenlm.tokenizer import Tokenizer

TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def assistant_loss(folder: Path, conversations: list[tuple[str, str]]) -> float:
    """Mean next-token cross-entropy on assistant tokens, by transformers and `tokenizers`.

    The oracle for the loss `zenlm evaluate --task sft` reports: the conversation is
    rendered by hand as TEMPLATE renders it, and the assistant tokens are those after the
    generation prompt (the reply, its <|im_end|> and the newline after it).
    """
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    backend = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    total, count = 0.0, 0
    for user, reply in conversations:
        prompt = f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
        encoding = backend.encode(f"{prompt}{reply}<|im_end|>\n", add_special_tokens=False)
        ids = torch.tensor([encoding.ids])
        assistant = torch.tensor([start >= len(prompt) and end > start
                                  for start, end in encoding.offsets])
        with torch.no_grad():
            logits = model(ids).logits[0, :-1].double()  # (T-1, V): predicts tokens 1..T-1
        keep = assistant[1:]
        total += float(F.cross_entropy(logits[keep], ids[0, 1:][keep], reduction="sum"))
        count += int(keep.sum())
    return total / count


def test_sft_lora_finetune_and_evaluate(minilm_folder, tmp_path, capsys):
    backend = tokenizers.Tokenizer.from_str(zenlm.load(minilm_folder).tokenizer.backend.to_str())
    backend.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    tokenizer = Tokenizer(backend, eos_token="<|im_end|>", pad_token="[PAD]",
                          chat_template=TEMPLATE)
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, d_model=32, n_layers=2, n_heads=4,
                         n_kv_heads=2, d_ff=64, max_seq_len=256, tie_embeddings=True,
                         hf_model_type="llama")
    base = tmp_path / "base"
    save_hf_model(build_model(config), base, tokenizer)
    data = tmp_path / "chat.jsonl"
    conversations = [(f"count to {i}", " ".join(map(str, range(i)))) for i in range(1, 25)]
    data.write_text("".join(json.dumps({"instruction": user, "input": "", "output": reply})
                            + "\n" for user, reply in conversations))
    out = tmp_path / "run"
    assert main(["finetune", "--task", "sft", "--model", str(base), "--train", str(data),
                 "--output", str(out), "--lora", "--lora-targets", "q,k,v,o,gate,up,down",
                 "--max-steps", "8", "--batch-size", "2", "--max-length", "64",
                 "--lr", "3e-2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["validation"]["tokens"] > 0
    assert (out / "model" / "adapter.safetensors").is_file()
    assert not (out / "model" / "head.safetensors").exists()
    assert main(["evaluate", "--task", "sft", "--model", str(out / "model"), "--data", str(data),
                 "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["n"] == 24
    before, after = assistant_loss(base, conversations), assistant_loss(out / "model",
                                                                         conversations)
    assert scores["loss"] == pytest.approx(after, rel=1e-4)  # evaluate reports the true loss
    assert after < before - 0.2  # and fine-tuning lowered it (by ~0.31 nats)
    predictions = tmp_path / "replies.jsonl"
    assert main(["predict", "--task", "sft", "--model", str(out / "model"), "--input", str(data),
                 "--output", str(predictions), "--max-new-tokens", "3"]) == 0
    records = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [r["messages"] for r in records] == [[{"role": "user", "content": user}]
                                                for user, _ in conversations]
    assert all(isinstance(r["reply"], str) for r in records)
