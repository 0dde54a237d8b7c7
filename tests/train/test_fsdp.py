"""FSDP over 2 CPU processes (gloo, torchrun) = 1 process with twice the accumulation."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.train.helpers import env, run_cli, step_losses, write_config, write_corpus
from zenlm.train.checkpoint import latest_checkpoint, read_checkpoint


def torchrun(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    cmd = [exe, "--standalone", "--nproc_per_node=2", "-m", "zenlm.cli", *args]
    result = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.fail(f"torchrun failed:\n{result.stdout}\n{result.stderr[-3000:]}")
    return result


def test_fsdp_two_processes_match_one_with_double_accumulation(tmp_path):
    corpus = write_corpus(tmp_path)
    single = tmp_path / "single"
    run_cli("pretrain", "--config",
            str(write_config(tmp_path, corpus, single, max_steps=8, grad_accum=2)))
    sharded = tmp_path / "fsdp"
    config = write_config(tmp_path, corpus, sharded, max_steps=8, grad_accum=1,
                          distributed="fsdp")
    torchrun("pretrain", "--config", str(config))
    one, two = step_losses(single), step_losses(sharded)
    assert sorted(one) == sorted(two) == list(range(1, 9))
    assert max(abs(one[s] - two[s]) for s in one) < 1e-5

    # The checkpoint is the full, unsharded one, in the single-process format.
    a, b = latest_checkpoint(single / "checkpoints"), latest_checkpoint(sharded / "checkpoints")
    weights_a, optim_a, _ = read_checkpoint(a)
    weights_b, optim_b, _ = read_checkpoint(b)
    assert weights_a.keys() == weights_b.keys()
    assert max((weights_a[k] - weights_b[k]).abs().max().item() for k in weights_a) < 1e-5
    assert optim_a["param_groups"] == optim_b["param_groups"]
    assert optim_a["state"].keys() == optim_b["state"].keys()
    assert load_file(str(b / "model.safetensors")).keys() == weights_a.keys()


def test_fsdp_resumes_into_the_same_curve(tmp_path):
    corpus = write_corpus(tmp_path)
    full = tmp_path / "full"
    run_cli("pretrain", "--config", str(write_config(tmp_path, corpus, full, max_steps=10)))
    resumed = tmp_path / "resumed"
    config = write_config(tmp_path, corpus, resumed, max_steps=10, batch_size=2,
                          distributed="fsdp")
    # Stopping at 5 (inside the warmup, so the learning rates are those of the full run),
    # then resuming to 10: the checkpoint between is gathered on rank 0 and re-sharded.
    torchrun("pretrain", "--config", str(config), "--train.max_steps=5")
    torchrun("pretrain", "--config", str(config), "--resume", "auto")
    one, two = step_losses(full), step_losses(resumed)
    assert sorted(two) == list(range(1, 11))
    assert max(abs(one[s] - two[s]) for s in one) < 1e-5


def test_fsdp_alone_is_plain_training():
    from zenlm.train.config import LoopConfig, OptimConfig
    from zenlm.train.trainer import Trainer

    loop = LoopConfig(distributed="fsdp", progress=False)
    trainer = Trainer(torch.nn.Linear(2, 2), lambda m, b: m(b).sum(), None, None,
                      optim=OptimConfig(), loop=loop)  # type: ignore[arg-type]
    assert not trainer.sharded and trainer.step_model is trainer.model
    with pytest.raises(ValueError, match="ddp or fsdp"):
        Trainer(torch.nn.Linear(2, 2), lambda m, b: m(b).sum(), None, None,
                optim=OptimConfig(), loop=LoopConfig(distributed="zero3"))  # type: ignore[arg-type]
