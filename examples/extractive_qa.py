"""Extractive question answering with an encoder: question + context -> answer span.

The classic version slices the batch dimension of the start/end logits as if it were
the token dimension, and reads token indices as character positions. An extractive
reader scores every token of every window of the context as the answer's start and
end; the answer is the best valid span (end after start, inside the context, at most
30 tokens), mapped back to characters through the tokenizer's offsets. Here
all-MiniLM-L6-v2 is fine-tuned on SQuAD articles and scored on articles it never saw
(a tenth of the training articles, whole, is the validation split that picks the best
checkpoint).

    python examples/extractive_qa.py                    # ~40 minutes on 2 cores
    python examples/extractive_qa.py --max-steps 20 --train-articles 3 --test-articles 1

Prints exact match and F1 on the held-out articles, then each new question's answer
with its character offsets in the context and its score (start + end logit).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from zenlm.tasks import load_task
from zenlm.tasks.evaluate import evaluate_finetuned
from zenlm.tasks.runner import FinetuneOptions, finetune

DATA = Path(os.environ.get("ZENLM_DATA", Path(__file__).resolve().parents[1].parent / "shared"
                           / "data"))
CONTEXT = ("The Amazon River in South America is the largest river by discharge volume of "
           "water in the world. It flows through Peru, Colombia and Brazil before reaching "
           "the Atlantic Ocean, and its basin covers about 7 million square kilometres.")
QUESTIONS = ["Which ocean does the Amazon flow into?", "How large is the Amazon basin?"]


def split_articles(path: Path, n_train: int, n_test: int, out: Path) -> tuple[Path, Path]:
    """The first `n_train` articles to train on and the last `n_test` to test on."""
    data = json.loads(path.read_text(encoding="utf-8"))
    articles = data["data"]
    if n_train + n_test > len(articles):
        raise SystemExit(f"{path} has {len(articles)} articles, not {n_train + n_test}")
    parts = {"train.json": articles[:n_train], "test.json": articles[len(articles) - n_test:]}
    for name, chosen in parts.items():
        (out / name).write_text(json.dumps({"data": chosen, "version": "1.1"}), encoding="utf-8")
    return out / "train.json", out / "test.json"


def main(argv: list[str] | None = None) -> None:
    """Fine-tune on some articles, score on others, answer new questions."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA / "squad" / "train-sample.json"))
    parser.add_argument("--out", default="runs/example-extractive-qa")
    parser.add_argument("--train-articles", type=int, default=36)
    parser.add_argument("--test-articles", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=0, help="0: one epoch")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, test = split_articles(Path(args.data), args.train_articles, args.test_articles, out)
    summary = finetune(FinetuneOptions(task="qa", model="all-minilm-l6-v2", train=str(train),
                                       output=str(out), max_length=384, stride=128,
                                       max_steps=args.max_steps, lr=1e-4, batch_size=16))
    scores = evaluate_finetuned("qa", summary["model_dir"], str(test)).metrics
    print(f"held-out articles: exact match {scores['exact_match']:.1f}, F1 {scores['f1']:.1f} "
          f"on {scores['n']} questions after {summary['steps']} steps")
    reader = load_task(summary["model_dir"])
    for record in reader.predict([{"question": q, "context": CONTEXT} for q in QUESTIONS]):
        print(f"{record['answer']!r} [{record['start']}:{record['end']}] "
              f"score {record['score']:.2f}")


if __name__ == "__main__":
    main()
