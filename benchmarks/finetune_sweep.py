"""Sweep `zenlm finetune`'s settings around each task's default, scored on held-out data.

    nice -n 10 python benchmarks/finetune_sweep.py sst2|conll|squad [--grid lr,freeze]
        [--cap-minutes 45] [--out runs/sweep] [--dry-run] [--extra "--max-steps 5"]

Each run is the real CLI (`python -m zenlm finetune ...` in a subprocess) with one setting
changed from the task's defaults (the `default` run changes none: the command a new user
types), stopped after `--cap-minutes` of training. Its score is finetune's own validation
report of the best weights, on held-out data:
    sst2   classify  a validation split sharing no text with training
                     (`split()` of benchmarks/dp_sst2.py: whole sentences, and no training
                     row that is a span of one or shares 4 words with one)
    conll  ner       CoNLL-2003 valid.txt
    squad  qa        held-out articles (`--val-fraction 0.1`, split by article)
For squad, the `decode` grid re-scores the default run's model on the same held-out
articles under several n-best and max-answer-length values, without retraining (the
windows' logits are computed once).

Writes <out>/<task>/results.json (every run's settings and scores) and
<out>/<task>/sweep.md (one table, the default's row marked). A run already in results.json
(same name, no error) is not run again, so invocations with other grids grow one table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # dp_sst2's split, not a copy of it
sys.path.insert(0, str(ROOT / "src"))
DATA = Path(os.environ.get("ZENLM_DATA", ROOT.parent / "shared" / "data"))

TASKS = {"sst2": "classify", "conll": "ner", "squad": "qa"}
HEADLINE = {"classify": "accuracy", "ner": "f1", "qa": "f1"}
SST2_VAL = 1000  # validation sentences of the SST-2 split (as benchmarks/dp_sst2.py)

# One setting changed at a time from the task's defaults: grid name -> runs (flags).
# Values bracket the defaults (src/zenlm/tasks/{classify,ner,qa}.py).
GRIDS: dict[str, dict[str, list[list[str]]]] = {
    "sst2": {
        "lr": [["--lr", v] for v in ("5e-5", "2e-4")],
        "epochs": [["--epochs", v] for v in ("0.2", "1.0", "2.0")],
        "minutes": [["--minutes", v] for v in ("10", "20")],
        "freeze": [["--no-freeze-embeddings"], ["--freeze-layers", "2"]],
        "length": [["--max-length", v] for v in ("48", "96")],
        "warmup": [["--warmup-fraction", v] for v in ("0.0", "0.1")],
        "batch": [["--batch-size", v] for v in ("16", "64")],
    },
    "conll": {
        "lr": [["--lr", v] for v in ("5e-5", "2e-4")],
        "epochs": [["--epochs", v] for v in ("1.0", "2.0", "2.5")],
        "minutes": [["--minutes", v] for v in ("30", "40")],
        "freeze": [["--no-freeze-embeddings"], ["--freeze-layers", "2"]],
        "length": [["--max-length", v] for v in ("96", "160")],
        "warmup": [["--warmup-fraction", v] for v in ("0.0", "0.1")],
        "batch": [["--batch-size", v] for v in ("16", "64")],
    },
    "squad": {
        "lr": [["--lr", v] for v in ("1e-4", "3e-4")],
        "epochs": [["--epochs", v] for v in ("1.0", "3.0")],
        "minutes": [["--minutes", v] for v in ("30", "40")],
        "freeze": [["--no-freeze-embeddings"], ["--freeze-layers", "2"]],
        "length": [["--max-length", "192", "--stride", "64"],
                   ["--max-length", "384", "--stride", "128"]],
        "warmup": [["--warmup-fraction", v] for v in ("0.0", "0.1")],
        "batch": [["--batch-size", v] for v in ("8", "32")],
    },
}
# squad's `decode` grid: answer choice on the default run's model, no retraining.
N_BEST = (1, 5, 10, 20, 40)
MAX_ANSWER_LENGTH = (10, 15, 20, 30, 50)


@dataclass
class Run:
    """One fine-tuning run of the sweep."""

    name: str
    grid: str
    flags: list[str] = field(default_factory=list)  # changed from the task's defaults

    @property
    def is_default(self) -> bool:
        return not self.flags


def plan(sweep: str, grids: list[str]) -> list[Run]:
    """The runs of `grids` (the default first: every grid is measured against it)."""
    runs = [Run("default", "default")]
    for grid in grids:
        if grid in ("default", "decode"):
            continue
        runs += [Run(" ".join(flags).replace("--", ""), grid, flags)
                 for flags in GRIDS[sweep][grid]]
    return runs


def data_flags(sweep: str, out: Path, *, prepare: bool) -> list[str]:
    """--train/--val of the task's held-out split (SST-2's is written under `out`)."""
    if sweep == "conll":
        return ["--train", str(DATA / "conll2003/train.txt"),
                "--val", str(DATA / "conll2003/valid.txt")]
    if sweep == "squad":  # finetune holds out whole articles (`TaskSpec.split`, seed 0)
        return ["--train", str(DATA / "squad/train-sample.json"), "--val-fraction", "0.1"]
    train, val = out / "sst2-train.tsv", out / "sst2-val.tsv"
    if prepare:
        from dp_sst2 import read_rows, split, write_tsv

        out.mkdir(parents=True, exist_ok=True)

        rows, held, _ = split(read_rows(DATA / "sst2/train.tsv"), SST2_VAL, 0)
        write_tsv(train, rows)
        write_tsv(val, held)
        print(f"sst2 split: train {len(rows)}, validation {len(held)} (no shared text)",
              flush=True)
    return ["--train", str(train), "--val", str(val)]


def command(sweep: str, run: Run, args: argparse.Namespace, data: list[str]) -> list[str]:
    """The `python -m zenlm finetune` command line of `run`."""
    return [sys.executable, "-m", "zenlm", "finetune", "--task", TASKS[sweep],
            "--model", args.model, *data, "--output", str(run_dir(args, sweep, run)),
            "--max-minutes", str(args.cap_minutes), *run.flags, *shlex.split(args.extra)]


def run_dir(args: argparse.Namespace, sweep: str, run: Run) -> Path:
    return Path(args.out) / sweep / "runs" / run.name.replace(" ", "_").replace("=", "")


def train(sweep: str, run: Run, args: argparse.Namespace, data: list[str]) -> dict[str, Any]:
    """Run one fine-tuning through the CLI; its summary's scores and settings."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    # Deadline: the training cap, plus loading, evaluations and saving.
    done = subprocess.run(command(sweep, run, args, data), env=env, capture_output=True,
                          text=True, timeout=args.cap_minutes * 60 + 1200)
    wall = (time.perf_counter() - start) / 60
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
        return {"name": run.name, "grid": run.grid, "flags": run.flags, "error":
                done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    task = TASKS[sweep]
    return {"name": run.name, "grid": run.grid, "flags": run.flags,
            "default": run.is_default, "metric": HEADLINE[task],
            "score": summary["validation"][HEADLINE[task]], "best_step": summary["best_step"],
            "steps": summary["steps"], "train_minutes": summary["train_minutes"],
            "wall_minutes": wall, "settings": summary["settings"],
            "from_task_defaults": summary["from_task_defaults"], "line": summary["line"],
            "model_dir": summary["model_dir"]}


def decode_grid(model_dir: str, data: list[str]) -> list[dict[str, Any]]:
    """SQuAD F1/EM of one model on the held-out articles under each n-best x max length."""
    import torch

    from zenlm.eval import metrics
    from zenlm.tasks.checkpoint import backbone_of, load_task_model
    from zenlm.tasks.qa import postprocess_qa, span_logits, span_options
    from zenlm.tasks.registry import get_task
    from zenlm.tasks.spec import pad_id

    spec = get_task("qa")
    network, tokenizer, info = load_task_model(model_dir)
    _, held = spec.split(spec.read(data[1]), 0.1, 0)  # finetune's own split (seed 0)
    features = spec.encode(tokenizer, held, info)
    with torch.inference_mode():
        logits = span_logits(network, features, pad_id(tokenizer, backbone_of(network).config))
    refs = {e.id: [a for a, _ in e.answers] for e in held}
    trained = span_options(info)
    rows = []
    for n_best, longest in itertools.product(N_BEST, MAX_ANSWER_LENGTH):
        answers = postprocess_qa(held, features, logits, n_best=n_best,
                                 max_answer_length=longest)
        rows.append({"name": f"n-best {n_best} max-answer-length {longest}", "grid": "decode",
                     "flags": ["--n-best", str(n_best), "--max-answer-length", str(longest)],
                     "default": (n_best, longest) == (trained["n_best"],
                                                      trained["max_answer_length"]),
                     "metric": "f1", **metrics.squad_scores(answers, refs), "n": len(held)})
        rows[-1]["score"] = rows[-1]["f1"]
    return rows


def markdown_table(results: list[dict[str, Any]], title: str) -> str:
    """One row per run, best score first within each grid; the default's row marked."""
    lines = [f"### {title}", "", "| grid | run | score | best step / steps | minutes | |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in results:
        mark = "**← default**" if row.get("default") else ""
        if "error" in row:
            lines.append(f"| {row['grid']} | {row['name']} | failed: {row['error']} | | | |")
            continue
        steps = f"{row['best_step']} / {row['steps']}" if "steps" in row else ""
        minutes = f"{row['train_minutes']:.1f}" if "train_minutes" in row else ""
        lines.append(f"| {row['grid']} | {row['name']} | {row['metric']} {row['score']:.4g} "
                     f"| {steps} | {minutes} | {mark} |")
    return "\n".join(lines) + "\n"


def earlier_runs(path: Path) -> dict[str, dict[str, Any]]:
    """The successful runs of an earlier invocation's results.json, by name (none if new)."""
    if not path.is_file():
        return {}
    return {run["name"]: run for run in json.loads(path.read_text())["runs"]
            if "error" not in run}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", choices=list(TASKS))
    parser.add_argument("--grid", default="all",
                        help="comma-separated grids (default all): default, decode (squad), "
                        + ", ".join(GRIDS["sst2"]))
    parser.add_argument("--model", default="all-minilm-l6-v2")
    parser.add_argument("--out", default="runs/sweep")
    parser.add_argument("--cap-minutes", type=float, default=45.0,
                        help="training minutes of each run (finetune --max-minutes)")
    parser.add_argument("--extra", default="",
                        help="flags added to every run (e.g. \"--max-steps 5\" to check)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs, run nothing")
    args = parser.parse_args(argv)
    grids = list(GRIDS[args.sweep]) + (["decode"] if args.sweep == "squad" else [])
    chosen = grids if args.grid == "all" else args.grid.split(",")
    unknown = sorted(set(chosen) - {*grids, "default"})
    if unknown:
        parser.error(f"--grid {','.join(unknown)}: not a grid of {args.sweep}; valid: "
                     f"default, {', '.join(grids)}")
    from zenlm.cpu import cpu_info

    info = cpu_info()
    print(f"CPU: {info.model} ({info.cores} cores); flags: {' '.join(info.features)}; "
          f"zenlm level {info.level}", flush=True)
    out = Path(args.out) / args.sweep
    runs = plan(args.sweep, chosen)
    data = data_flags(args.sweep, out, prepare=not args.dry_run)
    if args.dry_run:
        for run in runs:
            print(f"[{run.grid}] {shlex.join(command(args.sweep, run, args, data))}")
        if "decode" in chosen:
            print(f"[decode] the default run's model re-scored under n-best {N_BEST} x "
                  f"max-answer-length {MAX_ANSWER_LENGTH} (no retraining)")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"sweep": args.sweep, "task": TASKS[args.sweep],
                               "cpu": info.summary(), "settings": vars(args), "runs": []}
    done = earlier_runs(out / "results.json")
    for run in runs:
        if run.name in done:  # measured by an earlier invocation: one table grows
            results["runs"].append(done.pop(run.name))
            continue
        results["runs"].append(train(args.sweep, run, args, data))
        print(markdown_table(results["runs"][-1:], run.name).splitlines()[-1], flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    results["runs"] += done.values()  # earlier runs of grids not chosen this time
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    default = results["runs"][0]
    if "decode" in chosen and "model_dir" in default:
        results["decode"] = decode_grid(default["model_dir"], data)
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    table = markdown_table(results["runs"], f"{args.sweep}: fine-tuning runs")
    if results.get("decode"):
        table += "\n" + markdown_table(results["decode"], f"{args.sweep}: answer choice")
    (out / "sweep.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
