"""BBC News Summary: lead-3, lead-k and a fine-tuned extractive summarizer, ROUGE on held-out.

Run: .venv/bin/python benchmarks/bbc_summary.py --out runs/bench/bbc [--max-minutes 16]

1. A seeded held-out split of ../shared/data/bbc-news-summary by article text: copies of
   a duplicated article (the file has 100) all fall on one side, so no article text is
   in both `DIR/train.jsonl` and `DIR/heldout.jsonl`.
2. Baselines on the held-out articles: lead-3 (the first three sentences after the
   headline), and lead-k: leading sentences within the same length budget rule as the
   model (a fraction of the article's words), at the model's budget and at the budget
   best for lead on the training file. The extractive oracle (every article sentence
   found in the reference, in article order) bounds what extraction in article order
   can reach.
3. `zenlm finetune --task summarize` on all-MiniLM-L6-v2 (extractive sentence scoring;
   its length budget chosen on a 10% validation split of the training file), then
   `zenlm evaluate --task summarize --model DIR/run/model --data DIR/heldout.jsonl --json`.
ROUGE-1/2/L are F-measures (0-100) from Google's rouge-score with Porter stemming.
Writes DIR/results.json and DIR/results.md and prints both.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import time
from pathlib import Path

from zenlm.cli import main as zenlm_main
from zenlm.cpu import cpu_info
from zenlm.data.parallel import TextPair
from zenlm.eval.metrics import rouge_scores
from zenlm.tasks import extractive
from zenlm.tasks.runner import FinetuneOptions, finetune

DATA = Path(os.environ.get("ZENLM_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SOURCE = DATA / "bbc-news-summary" / "bbc_news_summary_train.jsonl"


def split(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held-out): a seeded shuffle of distinct article texts, copies kept together."""
    keys = sorted({extractive.normalise(r["article"]) for r in rows})
    random.Random(seed).shuffle(keys)
    held = set(keys[: round(fraction * len(keys))])
    train = [r for r in rows if extractive.normalise(r["article"]) not in held]
    heldout = [r for r in rows if extractive.normalise(r["article"]) in held]
    assert not {r["article"] for r in train} & {r["article"] for r in heldout}
    return train, heldout


def baselines(train: list[dict], heldout: list[dict], model_ratio: float | None,
              seed: int, lead_sample: int = 400) -> dict[str, dict]:
    """ROUGE of lead-3, lead-k (two budgets) and the oracle on the held-out articles.

    Lead's own budget is chosen on `lead_sample` training articles (a seeded sample:
    ROUGE of 13 budgets on all of them is minutes of CPU for a figure that barely moves).
    """
    pairs = [TextPair(r["article"], r["summary"], i) for i, r in enumerate(heldout)]
    docs, refs = extractive.documents(pairs), [r["summary"] for r in heldout]
    sample = random.Random(seed).sample(train, min(lead_sample, len(train)))
    train_docs = extractive.documents([TextPair(r["article"], r["summary"], i)
                                       for i, r in enumerate(sample)])
    lead_ratio, _ = extractive.choose_ratio(train_docs, extractive.lead_scores(train_docs),
                                            [r["summary"] for r in sample])
    lead = extractive.lead_scores(docs)
    oracle = [" ".join(s for s, y in zip(d.sentences, d.labels or [], strict=True) if y)
              for d in docs]
    rows = {"lead-3": rouge_scores([" ".join(d.sentences[:3]) for d in docs], refs)}
    if model_ratio is not None:
        rows[f"lead-k, the model's budget ({model_ratio:.2f})"] = rouge_scores(
            extractive.summaries(docs, lead, model_ratio), refs)
    rows[f"lead-k, lead's best budget on train ({lead_ratio:.2f})"] = rouge_scores(
        extractive.summaries(docs, lead, lead_ratio), refs)
    rows["oracle (reference sentences, article order)"] = rouge_scores(oracle, refs)
    return rows


def evaluate(model_dir: Path, data: Path) -> dict:
    """`zenlm evaluate --task summarize --json` through the CLI, parsed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = zenlm_main(["evaluate", "--task", "summarize", "--model", str(model_dir),
                           "--data", str(data), "--json"])
    if code != 0:
        raise SystemExit(f"zenlm evaluate failed with exit code {code}")
    return json.loads(out.getvalue())


def table(rows: dict[str, dict]) -> str:
    lines = ["| summarizer | ROUGE-1 | ROUGE-2 | ROUGE-L |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {s['rouge1']:.2f} | {s['rouge2']:.2f} | {s['rougeL']:.2f} |"
              for name, s in rows.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--heldout", type=float, default=0.15, help="fraction of articles")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=220)
    parser.add_argument("--max-minutes", type=float, default=17.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--freeze-layers", type=int, default=3,
                        help="embeddings and this many lowest blocks stay as pretrained")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--limit", type=int, default=0, help="use only this many rows (smoke)")
    parser.add_argument("--baselines-only", action="store_true", help="no training")
    parser.add_argument("--lead-sample", type=int, default=400,
                        help="training articles on which lead-k's budget is chosen")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(cpu_info().describe(), flush=True)
    rows = [json.loads(line) for line in SOURCE.read_text(encoding="utf-8").splitlines()]
    rows = rows[: args.limit] if args.limit else rows
    train, heldout = split(rows, args.heldout, args.seed)
    for name, part in (("train", train), ("heldout", heldout)):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                   for r in part), encoding="utf-8")
    print(f"{len(train)} training and {len(heldout)} held-out articles", flush=True)
    results = {"cpu": cpu_info().summary(), "args": vars(args), "train_articles": len(train),
               "heldout_articles": len(heldout)}
    if args.baselines_only:
        _report(out, {**results, "scores": baselines(train, heldout, None, args.seed,
                                                           args.lead_sample)})
        return
    started = time.perf_counter()
    summary = finetune(FinetuneOptions(
        task="summarize", model="all-minilm-l6-v2", train=str(out / "train.jsonl"),
        output=str(out / "run"), max_steps=args.max_steps, max_minutes=args.max_minutes,
        batch_size=args.batch_size, lr=args.lr, max_length=args.max_length, seed=args.seed,
        freeze_embeddings=True,  # a third of MiniLM's weights; their AdamW update is slow
        freeze_layers=args.freeze_layers,  # no backward through them: ~1.5x the tokens a minute
    ))
    finetune_minutes = (time.perf_counter() - started) / 60
    model_dir = Path(summary["model_dir"])
    scores = evaluate(model_dir, out / "heldout.jsonl")
    rows_out = {**baselines(train, heldout, scores["ratio"], args.seed, args.lead_sample),
                "zenlm extractive, all-MiniLM-L6-v2 fine-tuned": scores}
    _report(out, {**results, "steps": summary["steps"], "train_minutes": summary["train_minutes"],
                  "finetune_minutes": finetune_minutes, "validation": summary["validation"],
                  "scores": rows_out})


def _report(out: Path, results: dict) -> None:
    """Write results.json and results.md; print the settings and the table."""
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report = table(results["scores"])
    (out / "results.md").write_text(report + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "scores"}, indent=2))
    print(report)


if __name__ == "__main__":
    main()
