"""DDP over 2 CPU processes (gloo, torchrun) = 1 process with twice the accumulation."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.train.helpers import env, run_cli, step_losses, write_config, write_corpus


def test_ddp_two_processes_match_one_with_double_accumulation(tmp_path):
    torchrun = shutil.which("torchrun") or str(__import__("pathlib").Path(sys.executable).parent / "torchrun")
    corpus = write_corpus(tmp_path)
    single = tmp_path / "single"
    run_cli("pretrain", "--config", str(write_config(tmp_path, corpus, single, max_steps=8, grad_accum=2)))
    ddp = tmp_path / "ddp"
    config = write_config(tmp_path, corpus, ddp, max_steps=8, grad_accum=1)
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "zenlm.cli", "pretrain", "--config", str(config)]
    result = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.fail(f"torchrun failed:\n{result.stdout}\n{result.stderr[-3000:]}")
    one, two = step_losses(single), step_losses(ddp)
    assert sorted(one) == sorted(two) == list(range(1, 9))
    assert max(abs(one[s] - two[s]) for s in one) < 1e-5
