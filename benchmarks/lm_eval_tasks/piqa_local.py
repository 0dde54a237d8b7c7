"""Write benchmarks/lm_eval_tasks/data/piqa_dev.jsonl: PIQA's dev items with their labels.

PIQA ships its labels in a separate file (`piqa_dev-labels.lst`); lm-evaluation-harness's
`piqa_local` task (piqa_local.yaml, beside this file) reads one JSON object per line with
`goal`, `sol1`, `sol2` and an integer `label`. `zenlm evaluate --task multiple-choice`
reads the same file (label in the line) or the original pair (`--labels`).

    python benchmarks/lm_eval_tasks/piqa_local.py [--piqa DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_PIQA = Path(os.environ.get("ZENLM_DATA", HERE.parents[2] / "shared" / "data")) / "piqa"


def convert(piqa: Path, out: Path) -> int:
    """Join piqa_dev.jsonl and piqa_dev-labels.lst line by line into `out`; returns the count."""
    items = (piqa / "piqa_dev.jsonl").read_text(encoding="utf-8").splitlines()
    labels = (piqa / "piqa_dev-labels.lst").read_text(encoding="utf-8").split()
    if len(items) != len(labels):
        raise SystemExit(f"{piqa}: {len(items)} items but {len(labels)} labels")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for line, label in zip(items, labels, strict=True):
            item = json.loads(line)
            f.write(json.dumps({"goal": item["goal"], "sol1": item["sol1"], "sol2": item["sol2"],
                                "label": int(label)}, ensure_ascii=False) + "\n")
    return len(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--piqa", type=Path, default=DEFAULT_PIQA, help="folder of piqa_dev.*")
    parser.add_argument("--out", type=Path, default=HERE / "data" / "piqa_dev.jsonl")
    args = parser.parse_args()
    print(f"wrote {convert(args.piqa, args.out)} items to {args.out}")


if __name__ == "__main__":
    main()
