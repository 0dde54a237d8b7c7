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
    pausing_cli,
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
        assert time.monotonic() < deadline, f"step {min_steps} not logged in 120 s"
        time.sleep(0.002)
    time.sleep(extra_delay)  # a seeded random kill point (inside a save or not), not a bound
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    return logged_steps(out_dir)


def _kill_when_parked(args: list[str], flag) -> None:
    """Run `args` (a `pausing_cli`) until it parks, then SIGKILL it: no race with the run."""
    proc = subprocess.Popen(args, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not flag.exists():
        if proc.poll() is not None:
            raise AssertionError(f"run ended before parking: {proc.stderr.read().decode()}")
        assert time.monotonic() < deadline, "the run did not reach its pause step in 120 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def test_sigkill_then_resume_auto_gives_identical_losses(reference):
    folder, corpus, expected = reference
    out = folder / "killed"
    config = str(write_config(folder, corpus, out))
    _kill_when_parked(pausing_cli(13, folder / "parked", "pretrain", "--config", config),
                      folder / "parked")
    assert logged_steps(out) == 13  # killed mid-run: checkpoints at 5 and 10, steps 11-13 lost
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
