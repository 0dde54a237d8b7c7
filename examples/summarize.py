"""Summarization of news articles with an encoder: pick the sentences that carry the story.

all-MiniLM-L6-v2 is fine-tuned to score each sentence of an article by whether it
belongs in the reference summary (BBC News Summary's extracts); a summary is the
best-scored sentences in article order. Scored with ROUGE (rouge-score, stemmed) on
held-out articles, next to the lead-3 baseline (the first three sentences), which is
hard to beat on news.

    python examples/summarize.py                 # a 10-minute training budget
    python examples/summarize.py --minutes 0.5 --limit 60 --val-limit 10

Prints ROUGE-1/2/L of the model and of lead-3, then one article's summary.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

from rouge_score import rouge_scorer

from zenlm.tasks import load_task
from zenlm.tasks.evaluate import evaluate_finetuned
from zenlm.tasks.runner import FinetuneOptions, finetune

DATA = Path(os.environ.get("ZENLM_DATA", Path(__file__).resolve().parents[1].parent / "shared"
                           / "data"))


def lead3(article: str) -> str:
    """The first three sentences (split at '. ', as the articles are plain prose)."""
    sentences = [s for s in article.replace("\n", " ").split(". ") if s.strip()]
    return ". ".join(sentences[:3])


def main(argv: list[str] | None = None) -> None:
    """Split, fine-tune, score against lead-3, summarize one article."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA / "bbc-news-summary"
                                              / "bbc_news_summary_train.jsonl"))
    parser.add_argument("--out", default="runs/example-summarize")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget")
    parser.add_argument("--limit", type=int, default=0, help="articles used (0: all)")
    parser.add_argument("--val-limit", type=int, default=100, help="held-out articles")
    args = parser.parse_args(argv)

    records = [json.loads(line) for line in Path(args.data).read_text(encoding="utf-8")
               .splitlines() if line.strip()]
    random.Random(0).shuffle(records)
    records = records[:args.limit] if args.limit else records
    val, train = records[:args.val_limit], records[args.val_limit:]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train), ("val", val)):
        (out / f"{name}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
    summary = finetune(FinetuneOptions(task="summarize", model="all-minilm-l6-v2",
                                       train=str(out / "train.jsonl"),
                                       val=str(out / "val.jsonl"), output=str(out),
                                       minutes=args.minutes, epochs=5))
    scores = evaluate_finetuned("summarize", summary["model_dir"], str(out / "val.jsonl")).metrics
    fields = ("rouge1", "rouge2", "rougeL")
    print("model:  " + "  ".join(f"{k} {scores[k]:.2f}" for k in fields))
    scorer = rouge_scorer.RougeScorer(list(fields), use_stemmer=True)
    baseline = [scorer.score(r["summary"], lead3(r["article"])) for r in val]
    print("lead-3: " + "  ".join(
        f"{k} {100 * sum(s[k].fmeasure for s in baseline) / len(baseline):.2f}" for k in fields))
    summarizer = load_task(summary["model_dir"])
    print(f"summary of {val[0]['article'][:60]!r}...:\n{summarizer(val[0]['article'])['summary']}")


if __name__ == "__main__":
    main()
