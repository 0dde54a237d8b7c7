"""`zenlm evaluate --task multiple-choice`: lm-evaluation-harness's multiple choice.

Each choice's log-likelihood given the item's prompt is summed over its tokens
(`zenlm.eval.loglik`, the prompt prefilled once per item); the prediction is the choice
with the highest sum (`acc`), or the highest sum divided by the choice's length in
characters (`acc_norm`). Standard errors are lm-eval's: the sample standard deviation
of the per-item 0/1 scores over sqrt(n). Data formats, prompts and few-shot examples:
`zenlm.eval.choice_data`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from zenlm.eval.choice_data import (
    FEWSHOT_DELIMITER,
    TARGET_DELIMITER,
    Item,
    contexts,
    default_template,
    read_items,
    unescape,
)
from zenlm.eval.registry import Evaluation
from zenlm.eval.report import Figure, Report, Table


def add_options(group: argparse._ArgumentGroup) -> None:
    """The options of `--task multiple-choice`."""
    group.add_argument("--labels", default=None, metavar="FILE",
                       help="multiple-choice: labels file, one per line, aligned with --data "
                       "(PIQA's *-labels.lst); default: 'label' in each line")
    group.add_argument("--template", default=None,
                       help="multiple-choice: prompt, filled with the item's fields "
                       "(\\n is a newline); default PIQA's 'Question: {goal}\\nAnswer:' "
                       "or '{context}' for the generic format")
    group.add_argument("--shots", type=int, default=0,
                       help="multiple-choice: solved examples before each item, drawn from "
                       "the same file without the item (default 0)")
    group.add_argument("--seed", type=int, default=1234,
                       help="multiple-choice: seed of the few-shot draw (default 1234, "
                       "lm-eval's fewshot seed)")
    group.add_argument("--target-delimiter", default=TARGET_DELIMITER,
                       help="multiple-choice: text between prompt and choice (default ' ')")
    group.add_argument("--batch-size", type=int, default=16,
                       help="multiple-choice: choices scored per forward pass (default 16)")
    group.add_argument("--limit", type=int, default=None,
                       help="multiple-choice: score only the first N items")
    group.add_argument("--predictions", default=None, metavar="FILE",
                       help="multiple-choice: write per-item log-likelihoods and predictions "
                       "(JSONL)")


def run(*, model: str, data: str | None, quantize: str = "none", labels: str | None = None,
        template: str | None = None, shots: int = 0, seed: int = 1234,
        target_delimiter: str = TARGET_DELIMITER, batch_size: int = 16,
        limit: int | None = None, predictions: str | None = None) -> Report:
    """Score every item of `data`; see the module docstring.

    Raises:
        ValueError: bad data (file and line named), bad options, or a model that is not a
            causal decoder.
    """
    if data is None:
        raise ValueError("--task multiple-choice needs --data FILE (JSONL)")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    items = read_items(data, labels)[:limit]
    template = unescape(template) if template is not None else default_template(items)
    prompts = contexts(items, template, shots, seed, target_delimiter)
    lm = _load(model, quantize)
    start = time.perf_counter()
    scores = _score(lm, items, prompts, target_delimiter, batch_size)
    seconds = time.perf_counter() - start
    rows = [_judge(item, row) for item, row in zip(items, scores, strict=True)]
    if predictions:
        _write_predictions(predictions, rows)
    settings = {"model": model, "data": data, "labels": labels, "format": items[0].format,
                "template": _typed(template), "shots": shots, "seed": seed,
                "target_delimiter": _typed(target_delimiter),
                "fewshot_delimiter": _typed(FEWSHOT_DELIMITER),
                "batch_size": batch_size, "quantize": quantize, "seconds": round(seconds, 3)}
    print(f"scored {len(items)} items in {seconds:.1f} s ({len(items) / seconds:.2f} items/s)",
          file=sys.stderr)
    return _report(rows, settings, len(items) / seconds)


def _typed(text: str) -> str:
    r"""Text as typed on the command line (a newline as `\n`): one line in the report."""
    return text.replace("\n", "\\n").replace("\t", "\\t")


def _load(model: str, quantize: str) -> Any:
    import zenlm
    from zenlm.models import DecoderLM

    lm = zenlm.load(model, quantize=quantize)
    if not isinstance(lm.model, DecoderLM):
        raise ValueError(f"{model}: multiple choice scores causal decoder LMs; this is a "
                         f"{type(lm.model).__name__}")
    return lm


def _score(lm: Any, items: list[Item], prompts: list[str], delimiter: str,
           batch_size: int) -> list[list[Any]]:
    """Every item's choice Scores, with a progress bar in items (and items/s)."""
    from tqdm import tqdm

    from zenlm.eval.loglik import encode_request, loglikelihoods

    requests = [encode_request(lm.tokenizer, prompt, [delimiter + c for c in item.choices])
                for item, prompt in zip(items, prompts, strict=True)]
    with tqdm(total=len(requests), unit="item", desc="multiple-choice", file=sys.stderr,
              disable=None) as bar:
        return loglikelihoods(lm.model, requests, batch_size=batch_size, progress=bar.update)


def _judge(item: Item, scores: list[Any]) -> dict[str, Any]:
    """One item's predictions (acc, acc_norm) and numbers, as a JSON-able row."""
    logprobs = [s.logprob for s in scores]
    normed = [lp / len(choice) for lp, choice in zip(logprobs, item.choices, strict=True)]
    pred, pred_norm = _argmax(logprobs), _argmax(normed)
    others = [lp for j, lp in enumerate(logprobs) if j != item.label]
    return {"line": item.line, "label": item.label, "pred": pred, "pred_norm": pred_norm,
            "acc": int(pred == item.label), "acc_norm": int(pred_norm == item.label),
            "loglik": logprobs, "n_tokens": [s.n_tokens for s in scores],
            "is_greedy": [s.is_greedy for s in scores],
            "margin": logprobs[item.label] - max(others)}


def _argmax(values: list[float]) -> int:
    """The first index of the largest value (numpy.argmax's tie rule, as lm-eval uses)."""
    return max(range(len(values)), key=lambda j: (values[j], -j))


def mean_stderr(values: list[int]) -> float:
    """lm-eval's `mean_stderr`: sample standard deviation (n - 1) over sqrt(n); nan if n < 2."""
    n = len(values)
    if n < 2:
        return math.nan
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) / math.sqrt(n)


def _write_predictions(path: str, rows: list[dict[str, Any]]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"wrote {path}", file=sys.stderr)


def _report(rows: list[dict[str, Any]], settings: dict[str, Any], items_per_s: float) -> Report:
    acc = [r["acc"] for r in rows]
    acc_norm = [r["acc_norm"] for r in rows]
    n = len(rows)
    metrics = {"acc": sum(acc) / n, "acc_stderr": mean_stderr(acc),
               "acc_norm": sum(acc_norm) / n, "acc_norm_stderr": mean_stderr(acc_norm),
               "n": n, "items_per_s": round(items_per_s, 3)}
    counts = [(j, sum(r["label"] == j for r in rows), sum(r["pred"] == j for r in rows),
               sum(r["pred_norm"] == j for r in rows))
              for j in range(max(len(r["loglik"]) for r in rows))]
    table = Table("Choices: gold and predicted", ["choice", "gold", "pred (acc)",
                                                  "pred (acc_norm)"], counts)
    margins = [r["margin"] for r in rows]

    def draw(axes: Any) -> None:
        axes.hist(margins, bins=30, color="tab:blue")
        axes.axvline(0.0, color="black", linewidth=1)
        axes.set_xlabel("log-likelihood of the gold choice minus the best other choice (nats)")
        axes.set_ylabel("items")

    figure = Figure("margin", "Margin of the gold choice (right of 0: correct by acc)", draw)
    return Report("multiple-choice", metrics, settings, [table], [figure])


EVALUATION = Evaluation(
    name="multiple-choice",
    help="lm-evaluation-harness's multiple choice: acc and acc_norm from summed "
         "log-likelihoods (PIQA or generic JSONL)",
    add_options=add_options,
    run=run,
)
