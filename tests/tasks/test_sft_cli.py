"""`zenlm finetune --task sft --lora` end to end on a tiny random Llama with a ChatML template."""

from __future__ import annotations

import json

import tokenizers
import torch

import zenlm
from zenlm.cli import main
from zenlm.config import ModelConfig
from zenlm.io.hf import save_hf_model
from zenlm.models import build_model
from zenlm.tokenizer import Tokenizer

TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


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
    data.write_text("".join(json.dumps({"instruction": f"count to {i}", "input": "",
                                        "output": " ".join(map(str, range(i)))}) + "\n"
                            for i in range(1, 25)))
    out = tmp_path / "run"
    assert main(["finetune", "--task", "sft", "--model", str(base), "--train", str(data),
                 "--output", str(out), "--lora", "--max-steps", "4", "--batch-size", "2",
                 "--max-length", "64", "--lr", "1e-2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["validation"]["tokens"] > 0
    assert (out / "model" / "adapter.safetensors").is_file()
    assert not (out / "model" / "head.safetensors").exists()
    assert main(["evaluate", "--task", "sft", "--model", str(out / "model"), "--data", str(data),
                 "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["loss"] > 0 and scores["n"] == 24
