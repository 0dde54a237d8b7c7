"""Fine-tune a BERT-family classifier (all-MiniLM-L6-v2) on SST-2, with a real validation split.

The classic version fine-tunes on two sentences and "validates" on two more. Here the
validation sentences are held out whole, and every training phrase cut from one of
them is dropped too: SST-2's training file holds many phrases of the same sentences,
so a random split scores a model on text it has already seen. Then the fine-tuned
model is scored (accuracy, F1 per class) and used on new sentences.

    python examples/bert_classifier.py                   # ~15 minutes on 2 cores
    python examples/bert_classifier.py --max-steps 30 --val-size 200   # a quick look

Prints the split sizes, the validation scores, then a label and its probability for
each new sentence.
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

from zenlm.tasks import load_task
from zenlm.tasks.evaluate import evaluate_finetuned
from zenlm.tasks.runner import FinetuneOptions, finetune

DATA = Path(os.environ.get("ZENLM_DATA", Path(__file__).resolve().parents[1].parent / "shared"
                           / "data"))
NEW = ["A gorgeous, witty and deeply moving film.",
       "Two hours of my life I will never get back."]


def sentence_split(rows: list[tuple[str, str]], val_size: int,
                   seed: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Hold out `val_size` whole sentences; drop every training phrase that is part of one.

    SST-2's rows are phrases; the longest rows (>= 12 words) are whole sentences.
    """
    sentences = [row for row in rows if len(row[0].split()) >= 12]
    held = random.Random(seed).sample(sentences, val_size)
    spans = set()  # every run of words of a held-out sentence
    for text, _ in held:
        words = text.split()
        spans.update(" ".join(words[i:j]) for i in range(len(words))
                     for j in range(i + 1, len(words) + 1))
    train = [row for row in rows if " ".join(row[0].split()) not in spans]
    return train, held


def write_tsv(path: Path, rows: list[tuple[str, str]]) -> Path:
    """A classify file: a header, then text TAB label per line."""
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows),
                    encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    """Split, fine-tune, score, predict."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA / "sst2" / "train.tsv"))
    parser.add_argument("--out", default="runs/example-bert-classifier")
    parser.add_argument("--val-size", type=int, default=872)  # SST-2's own dev set size
    parser.add_argument("--max-steps", type=int, default=0, help="0: one epoch")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    lines = Path(args.data).read_text(encoding="utf-8").splitlines()[1:]
    rows = [(text.strip(), label) for text, label in (line.rsplit("\t", 1) for line in lines)]
    train, val = sentence_split(rows, args.val_size, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{len(rows)} rows: {len(train)} to train on, {len(val)} held-out sentences "
          f"({len(rows) - len(train) - len(val)} training phrases dropped: parts of them)")
    summary = finetune(FinetuneOptions(
        task="classify", model="all-minilm-l6-v2", train=str(write_tsv(out / "train.tsv", train)),
        val=str(write_tsv(out / "val.tsv", val)), output=str(out), max_steps=args.max_steps,
        seed=args.seed))
    report = evaluate_finetuned("classify", summary["model_dir"], str(out / "val.tsv"))
    scores = report.metrics
    print(f"validation: accuracy {scores['accuracy']:.4f}, macro F1 {scores['f1']:.4f} "
          f"on {scores['n']} sentences after {summary['steps']} steps")
    for label, per in scores["per_class"].items():
        print(f"  class {label}: precision {per['precision']:.4f} recall {per['recall']:.4f} "
              f"F1 {per['f1']:.4f} ({per['support']} sentences)")
    classifier = load_task(summary["model_dir"])
    for record in classifier.predict(NEW):
        print(f"{record['label']} ({record['probs'][record['label']]:.2f})  {record['text']}")


if __name__ == "__main__":
    main()
