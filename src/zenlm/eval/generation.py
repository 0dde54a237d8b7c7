"""`zenlm evaluate --task generate`: the model answers each prompt; answers meet references.

Data: JSON lines, one item each: `prompt` (a string) and `reference` (a string) or
`references` (a list of strings, any number per item). The model generates with the
given sampling settings (greedy by default), through its chat template when it has one
(`--chat auto`), in batches. Each answer is scored against its references by:

- exact match and token F1 after SQuAD's normalisation (the official v1.1 script's,
  `zenlm.eval.metrics`), the best over the item's references;
- corpus BLEU and chrF with sacreBLEU, every reference of an item a reference stream
  (items with fewer references leave their extra streams empty, as sacreBLEU allows);
- ROUGE-1/2/L F-measure with Google's `rouge-score` (stemmed), the best reference per
  item (`score_multi`), averaged over items.

Every metric is on a 0-100 scale.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zenlm.eval.jsonl import read_json_objects
from zenlm.eval.metrics import ROUGE_KEYS, squad_exact_match, squad_f1
from zenlm.eval.registry import Evaluation
from zenlm.eval.report import Figure, Report, Table

CHAT_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class Item:
    """One prompt and its references; `line` is its line in the data file (1-based)."""

    prompt: str
    references: tuple[str, ...]
    line: int


def read_items(path: str | Path) -> list[Item]:
    """The items of a JSONL file.

    Raises:
        ValueError: a line that is not a JSON object, or without a non-empty string
            `prompt` and a string `reference` or a non-empty list of strings
            `references`, named by file and line; or a file without items.
    """
    path = Path(path)
    what = "a JSON object with `prompt` and `reference`/`references`"
    items = [_item(record, path, number)
             for number, record in read_json_objects(path, what)]
    if not items:
        raise ValueError(f"{path}: no items (expected one JSON object per line with "
                         "`prompt` and `reference` or `references`)")
    return items


def _item(record: dict[str, Any], path: Path, number: int) -> Item:
    where = f"{path}:{number}"
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"{where}: `prompt` must be a non-empty string, got {prompt!r}")
    if "reference" in record and "references" in record:
        raise ValueError(f"{where}: give `reference` or `references`, not both")
    if "reference" in record:
        refs = [record["reference"]]
    elif "references" in record:
        refs = record["references"]
        if not isinstance(refs, list) or not refs:
            raise ValueError(f"{where}: `references` must be a non-empty list of strings, "
                             f"got {refs!r}")
    else:
        raise ValueError(f"{where}: no reference: give `reference` (a string) or "
                         f"`references` (a list of strings); the keys are {sorted(record)}")
    for ref in refs:
        if not isinstance(ref, str):
            raise ValueError(f"{where}: a reference must be a string, got {ref!r}")
    return Item(prompt, tuple(refs), number)


# ---- scoring ---------------------------------------------------------------------------


def item_scores(output: str, references: Sequence[str]) -> dict[str, float]:
    """One answer's exact match, token F1 and ROUGE (0-100), the best over its references."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    best = scorer.score_multi(list(references), output)
    scores = {"exact_match": 100.0 * max(squad_exact_match(output, r) for r in references),
              "f1": 100.0 * max(squad_f1(output, r) for r in references)}
    scores.update({key: 100.0 * best[key].fmeasure for key in ROUGE_KEYS})
    return scores


def corpus_scores(outputs: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Corpus BLEU and chrF over all answers (sacreBLEU; any number of references per item).

    Reference stream k holds each item's k-th reference, or None where it has fewer.
    """
    from sacrebleu.metrics import BLEU, CHRF

    if len(outputs) != len(references):
        raise ValueError(f"{len(outputs)} outputs but {len(references)} reference lists")
    width = max(len(refs) for refs in references)
    streams = [[refs[k] if k < len(refs) else None for refs in references]
               for k in range(width)]
    bleu, chrf = BLEU(), CHRF()
    return {"bleu": float(bleu.corpus_score(list(outputs), streams).score),
            "chrf": float(chrf.corpus_score(list(outputs), streams).score),
            "bleu_signature": str(bleu.get_signature())}


def score(outputs: Sequence[str], items: Sequence[Item]) -> tuple[dict[str, Any], list[dict]]:
    """Mean per-item scores and the corpus scores; and each item's own scores."""
    per_item = [item_scores(out, item.references) for out, item in zip(outputs, items,
                                                                          strict=True)]
    keys = ("exact_match", "f1", *ROUGE_KEYS)
    metrics: dict[str, Any] = {key: sum(s[key] for s in per_item) / len(per_item)
                               for key in keys}
    metrics.update(corpus_scores(outputs, [item.references for item in items]))
    return metrics, per_item


# ---- generating ------------------------------------------------------------------------


def use_chat(lm: Any, mode: str) -> bool:
    """Whether prompts go through the chat template: `auto` when the model has one."""
    if mode not in CHAT_MODES:
        raise ValueError(f"--chat must be one of {CHAT_MODES}, got {mode!r}")
    has_template = getattr(lm.tokenizer, "chat_template", None) is not None
    if mode == "on" and not has_template:
        raise ValueError(f"--chat on: {lm.source} has no chat template; use --chat off "
                         "(or auto)")
    return has_template if mode == "auto" else mode == "on"


def generate_outputs(
    lm: Any, items: Sequence[Item], *, chat: bool, batch_size: int, options: dict[str, Any],
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Each item's answer: its prompt (chat-templated if `chat`) completed in batches.

    A seed makes item i draw from seed + i, whatever the batch size.
    """
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    prompts = [lm.encode_chat([{"role": "user", "content": item.prompt}]) if chat
               else lm.encode_prompt(item.prompt) for item in items]
    outputs: list[str] = []
    for start in range(0, len(prompts), batch_size):
        batch_options = dict(options)
        if options.get("seed") is not None:
            batch_options["seed"] = options["seed"] + start
        completions = lm.complete(prompts[start: start + batch_size], **batch_options)
        outputs += [completion.text for completion in completions]
        if progress is not None:
            progress(len(completions))
    return outputs


# ---- the task --------------------------------------------------------------------------


def add_options(group: argparse._ArgumentGroup) -> None:
    """The options of `--task generate`."""
    group.add_argument("--max-new-tokens", type=int, default=64,
                       help="generate: tokens per answer at most (default 64)")
    group.add_argument("--temperature", type=float, default=0.0,
                       help="generate: 0 is greedy (the default); > 0 samples")
    group.add_argument("--top-p", type=float, default=1.0, help="generate: nucleus threshold")
    group.add_argument("--top-k", type=int, default=0, help="generate: 0 keeps every token")
    group.add_argument("--seed", type=int, default=None,
                       help="generate: sampling seed (item i draws from seed + i)")
    group.add_argument("--stop", action="append", default=None, metavar="TEXT",
                       help="generate: a stop string (repeatable), e.g. '\\n'")
    group.add_argument("--chat", choices=CHAT_MODES, default="auto",
                       help="generate: wrap each prompt in the chat template as a user "
                       "message (auto: when the model has a template)")
    group.add_argument("--batch-size", type=int, default=8,
                       help="generate: prompts generated together (default 8)")
    group.add_argument("--limit", type=int, default=None,
                       help="generate: only the first N items")
    group.add_argument("--predictions", default=None, metavar="FILE",
                       help="generate: write each item's prompt, references, answer and "
                       "scores (JSONL)")


def run(*, model: str, data: str | None, quantize: str = "none", max_new_tokens: int = 64,
        temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, seed: int | None = None,
        stop: list[str] | None = None, chat: str = "auto", batch_size: int = 8,
        limit: int | None = None, predictions: str | None = None) -> Report:
    """Generate an answer to every item of `data` and score it; see the module docstring.

    Raises:
        ValueError: bad data (file and line named) or bad options.
    """
    import sys

    from tqdm import tqdm

    import zenlm
    from zenlm.errors import InvalidParameter
    from zenlm.generate import GenerationConfig

    if data is None:
        raise ValueError("--task generate needs --data FILE (JSONL of prompt and reference)")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    items = read_items(data)[:limit]
    # "\n" and "\t" as typed on a command line are the characters
    stops = [s.replace("\\n", "\n").replace("\\t", "\t") for s in stop or []]
    options = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
               "top_k": top_k, "seed": seed, "stop": stops}
    try:  # refuse bad sampling options before loading anything
        GenerationConfig(**options).validate()
    except InvalidParameter as exc:
        flag = "--" + exc.param.replace("_", "-")
        raise ValueError(flag + exc.message.removeprefix(exc.param)) from None
    lm = zenlm.load(model, quantize=quantize)
    templated = use_chat(lm, chat)
    start = time.perf_counter()
    with tqdm(total=len(items), unit="item", desc="generate", file=sys.stderr,
              disable=None) as bar:
        outputs = generate_outputs(lm, items, chat=templated, batch_size=batch_size,
                                   options=options, progress=bar.update)
    seconds = time.perf_counter() - start
    metrics, per_item = score(outputs, items)
    metrics["items"] = len(items)
    metrics["items_per_second"] = len(items) / seconds
    rows = [{"line": item.line, "prompt": item.prompt, "references": list(item.references),
             "output": out, **scores}
            for item, out, scores in zip(items, outputs, per_item, strict=True)]
    if predictions:
        _write_jsonl(predictions, rows)
    settings = {"model": model, "data": data, "quantize": quantize, "chat": templated,
                **options, "batch_size": batch_size, "seconds": round(seconds, 3),
                "bleu_signature": metrics.pop("bleu_signature")}
    return _report(metrics, settings, rows)


def _write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    with Path(path).open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _report(metrics: dict[str, Any], settings: dict[str, Any],
            rows: list[dict[str, Any]]) -> Report:
    """Headline metrics, the worst answers by F1, and a histogram of per-item F1."""
    worst = sorted(rows, key=lambda r: (r["f1"], r["line"]))[:10]
    table = Table("Lowest token F1 (up to 10 items)",
                  ["line", "prompt", "output", "best reference", "f1"],
                  [[r["line"], _clip(r["prompt"]), _clip(r["output"]),
                    _clip(max(r["references"], key=lambda ref: squad_f1(r["output"], ref))),
                    r["f1"]] for r in worst])
    f1s = [r["f1"] for r in rows]

    def histogram(axes: Any) -> None:
        axes.hist(f1s, bins=[i * 10 for i in range(11)], color="tab:blue", edgecolor="white")
        axes.set_xlabel("token F1 (best reference)")
        axes.set_ylabel("items")

    figure = Figure("f1_histogram", f"Token F1 per item (mean {metrics['f1']:.1f})",
                    histogram)
    return Report("generate", metrics, settings, [table], [figure])


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


EVALUATION = Evaluation(
    name="generate",
    help="generate an answer per prompt and score it against references: exact match, "
    "token F1, BLEU, chrF, ROUGE",
    add_options=add_options,
    run=run,
)
