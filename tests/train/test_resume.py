"""Exact resume after SIGKILL, and crash-safe checkpoints, through real CLI subprocesses."""

from __future__ import annotations

import random
import signal
import subprocess
import time

import pytest

from tests.train.helpers import (
    cli,
    env,
    logged_steps,
    run_cli,
    step_losses,
    write_config,
    write_corpus,
)
from zenlm.train.checkpoint import is_complete, latest_checkpoint, list_checkpoints


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: the per-step losses every interrupted run must reproduce."""
    folder = tmp_path_factory.mktemp("resume")
    corpus = write_corpus(folder)
    out = folder / "reference"
    run_cli("pretrain", "--config", str(write_config(folder, corpus, out)))
    losses = step_losses(out)
    assert sorted(losses) == list(range(1, 41))
    return folder, corpus, losses


def _kill_after(args: list[str], out_dir, min_steps: int, extra_delay: float = 0.0) -> int:
    proc = subprocess.Popen(args, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while logged_steps(out_dir) < min_steps:
        if proc.poll() is not None:
            raise AssertionError(f"run ended before step {min_steps}: {proc.stderr.read().decode()}")
        assert time.monotonic() < deadline
        time.sleep(0.002)
    time.sleep(extra_delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return logged_steps(out_dir)


def test_sigkill_then_resume_auto_gives_identical_losses(reference):
    folder, corpus, expected = reference
    out = folder / "killed"
    config = str(write_config(folder, corpus, out))
    killed_at = _kill_after(cli("pretrain", "--config", config), out, min_steps=13)
    assert killed_at < 40, "the run finished before it could be killed"
    resumed = run_cli("pretrain", "--config", config, "--resume", "auto")
    assert "resumed from" in resumed.stdout
    assert step_losses(out) == expected  # every step, exactly (==), on CPU fp32


def test_sigkill_during_saves_always_leaves_a_complete_checkpoint(reference):
    folder, corpus, expected = reference
    out = folder / "crashy"
    # A checkpoint at every step, so that many kills land inside a save.
    config = str(write_config(folder, corpus, out, save_every=1, keep_last=2))
    rng = random.Random(1)
    for attempt in range(5):
        done = logged_steps(out)
        if done >= 36:
            break
        # Step done+2 is logged only after step done+1's save returned: from then on a
        # complete checkpoint exists, and the random delay lands anywhere, saves included.
        _kill_after(cli("pretrain", "--config", config, "--resume", "auto"), out,
                    min_steps=done + 2, extra_delay=rng.uniform(0.0, 0.15))
        newest = latest_checkpoint(out / "checkpoints")
        assert newest is not None, f"kill {attempt}: no complete checkpoint"
        # Every visible step folder is complete: incomplete ones only exist as .tmp-*.
        assert all(is_complete(f) for f in list_checkpoints(out / "checkpoints"))
    run_cli("pretrain", "--config", config, "--resume", "auto")
    assert step_losses(out) == expected
