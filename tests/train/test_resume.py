"""Exact resume after SIGKILL, and crash-safe checkpoints, through real CLI subprocesses."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from tests.train.helpers import (
    env,
    logged_steps,
    parking_cli,
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


def _kill_when_parked(args: list[str], flag) -> bool:
    """Run `args` (a `parking_cli`) until it parks, then SIGKILL it: no race with the run.

    Returns False if the run finished before reaching its parking point.
    """
    proc = subprocess.Popen(args, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not flag.exists():
        if proc.poll() is not None:
            if proc.returncode:
                raise AssertionError(f"run failed: {proc.stderr.read().decode()}")
            return False
        assert time.monotonic() < deadline, "the run did not reach its parking point in 120 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    return True


def test_sigkill_then_resume_auto_gives_identical_losses(reference):
    folder, corpus, expected = reference
    out = folder / "killed"
    config = str(write_config(folder, corpus, out))
    flag = folder / "parked"
    assert _kill_when_parked(parking_cli("step:13", flag, "pretrain", "--config", config), flag)
    assert logged_steps(out) == 13  # killed mid-run: checkpoints at 5 and 10, steps 11-13 lost
    resumed = run_cli("pretrain", "--config", config, "--resume", "auto")
    assert "resumed from" in resumed.stdout
    assert step_losses(out) == expected  # every step, exactly (==), on CPU fp32


def test_sigkill_during_saves_always_leaves_a_complete_checkpoint(reference):
    folder, corpus, expected = reference
    out = folder / "crashy"
    # A checkpoint at every step; each kill lands at a chosen file operation of a save
    # (of ~18: weights 1, optimizer 2-3, state 4, manifest 5-15, after the rename 16,
    # pruning 17-18), never at a guessed time.
    config = str(write_config(folder, corpus, out, save_every=1, keep_last=2))
    kills = 0
    for attempt, call in enumerate((1, 3, 5, 9, 13, 16, 17, 18)):
        flag = folder / f"parked-{attempt}"
        where = f"save:{call}"
        args = parking_cli(where, flag, "pretrain", "--config", config, "--resume", "auto")
        if not _kill_when_parked(args, flag):
            break  # the run reached its last step
        kills += 1
        newest = latest_checkpoint(out / "checkpoints")
        assert newest is not None, f"kill {attempt} at {where}: no complete checkpoint"
        # Every visible step folder is complete: incomplete ones only exist as .tmp-*.
        assert all(is_complete(f) for f in list_checkpoints(out / "checkpoints")), where
    assert kills == 8
    run_cli("pretrain", "--config", config, "--resume", "auto")
    assert step_losses(out) == expected
