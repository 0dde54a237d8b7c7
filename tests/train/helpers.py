"""A tiny pretraining run through the real CLI, for resume and crash tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def write_corpus(folder: Path) -> Path:
    import random

    rng = random.Random(0)
    words = "the cat dog sat on a mat and ran to big red house with small blue door".split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) + "." for _ in range(600)]
    path = folder / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_config(folder: Path, corpus: Path, out_dir: Path, **train) -> Path:
    config = {
        "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "tie_embeddings": True},
        "data": {"paths": [str(corpus)], "txt_unit": "file", "block_size": 32, "val_fraction": 0.1,
                 "cache_dir": str(folder / "cache")},
        "tokenizer": {"kind": "char"},
        "optim": {"lr": 3e-3, "warmup_steps": 5, "min_lr": 3e-4},
        # float32: the DDP/FSDP tests compare runs that split batches differently, which
        # bfloat16 autocast (train dtype "auto" on CPUs with native bf16) rounds differently.
        "train": {"out_dir": str(out_dir), "max_steps": 40, "batch_size": 4, "eval_every": 10,
                  "eval_batches": 2, "save_every": 5, "keep_last": 2, "progress": False,
                  "export_hf": False, "dtype": "float32", **train},
    }
    path = out_dir.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "zenlm.cli", *args]


#: `zenlm` patched to park for good at a given point (argv: WHERE FLAG_FILE ZENLM_ARGS...),
#: then touch FLAG_FILE. WHERE is "step:N" (once step N's loss is logged) or "save:N" (at
#: the N-th file operation of the checkpoint code, counted from this process's second
#: save, so that a complete checkpoint exists and the kill lands inside a later save).
_PARKING_CLI = """
import functools, sys, threading
from pathlib import Path
from zenlm.train import checkpoint, trainer

where, flag = sys.argv[1].split(":"), Path(sys.argv[2])
at = int(where[1])

def park():
    flag.touch()
    threading.Event().wait()  # until the test kills the process

if where[0] == "step":
    write = trainer._Log.write

    def write_then_park(self, record):
        write(self, record)
        if record.get("step") == at and "loss" in record:
            park()

    trainer._Log.write = write_then_park
else:
    counts = {"saves": 0, "calls": 0}
    save = trainer.save_checkpoint

    def counting_save(*args, **kwargs):
        counts["saves"] += 1
        return save(*args, **kwargs)

    trainer.save_checkpoint = counting_save

    def parking(fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            if counts["saves"] >= 2:
                counts["calls"] += 1
                if counts["calls"] == at:
                    park()
            return fn(*args, **kwargs)
        return call

    for name in ("save_model", "save_file", "write_json", "_write_manifest", "_fsync",
                 "_remove", "prune"):
        setattr(checkpoint, name, parking(getattr(checkpoint, name)))

from zenlm.cli import main
sys.exit(main(sys.argv[3:]))
"""


def parking_cli(where: str, flag: Path, *args: str) -> list[str]:
    """`cli(*args)` that parks at `where` ("step:N" or "save:N") and then touches `flag`."""
    return [sys.executable, "-c", _PARKING_CLI, where, str(flag), *args]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cli(*args), env=env(), capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"zenlm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def step_losses(out_dir: Path) -> dict[int, float]:
    losses = {}
    for line in (out_dir / "log.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "loss" in record:
            assert record["step"] not in losses, f"step {record['step']} logged twice"
            losses[record["step"]] = record["loss"]
    return losses


def logged_steps(out_dir: Path) -> int:
    path = out_dir / "log.jsonl"
    if not path.is_file():
        return 0
    try:
        return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if '"loss"' in line)
    except OSError:
        return 0
