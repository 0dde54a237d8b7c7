"""Trainer in-process: checkpoints, keep-last-N, NaN stop, loss going down, HF export."""

from __future__ import annotations

import json
import math

import pytest
import torch

from zenlm.config import ModelConfig
from zenlm.data.shards import BlockSampler
from zenlm.models import build_model
from zenlm.train.checkpoint import (
    is_complete,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from zenlm.train.config import LoopConfig, OptimConfig
from zenlm.train.objectives import causal_lm_loss
from zenlm.train.schedule import lr_at
from zenlm.train.trainer import Trainer, TrainingDiverged, adamw


def tiny_model(vocab=16):
    torch.manual_seed(0)
    return build_model(ModelConfig(vocab_size=vocab, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                                   max_seq_len=16, tie_embeddings=True))


def periodic_tokens(n=4000, vocab=16):
    return (torch.arange(n) % 7 + (torch.arange(n) // 700) % 3).numpy().astype("uint16") % vocab


def make_trainer(tmp_path, **loop):
    tokens = periodic_tokens()
    settings = dict(out_dir=str(tmp_path), max_steps=30, batch_size=4, eval_every=10,
                    eval_batches=2, save_every=10, keep_last=2, progress=False)
    loop_cfg = LoopConfig(**{**settings, **loop})
    return Trainer(tiny_model(), causal_lm_loss, BlockSampler(tokens[:3500], 8),
                   BlockSampler(tokens[3500:], 8, shuffle=False),
                   optim=OptimConfig(lr=1e-2, warmup_steps=3, min_lr=1e-3), loop=loop_cfg)


def test_trainer_learns_saves_and_keeps_last(tmp_path):
    result = make_trainer(tmp_path).fit()
    assert result.steps == 30 and result.val_loss < 1.5 < math.log(16)
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000020", "step-00000030"]
    assert (tmp_path / "loss.png").stat().st_size > 1000
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert sum("val_loss" in r for r in records) == 3 and sum("loss" in r for r in records) == 30


def test_checkpoint_roundtrip_and_damage_detection(tmp_path):
    model, other = tiny_model(), tiny_model()
    with torch.no_grad():
        other.embed.weight.add_(1.0)
    optimizer = adamw(model, OptimConfig())
    causal_lm_loss(model, torch.randint(0, 16, (2, 9))).backward()
    optimizer.step()
    folder = save_checkpoint(tmp_path, 5, model=model, optimizer=optimizer, state={"step": 5})
    optimizer2 = adamw(other, OptimConfig())
    assert load_checkpoint(folder, model=other, optimizer=optimizer2) == {"step": 5}
    assert torch.equal(other.embed.weight, model.embed.weight) and other.lm_head.weight is other.embed.weight
    sd, sd2 = optimizer.state_dict(), optimizer2.state_dict()
    assert sd["param_groups"] == sd2["param_groups"] and sd["state"].keys() == sd2["state"].keys()
    for index, entry in sd["state"].items():
        assert all(torch.equal(entry[k], sd2["state"][index][k]) for k in entry)
    # A byte flipped after the fact: the manifest catches it and resume skips the folder.
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert not is_complete(folder) and latest_checkpoint(tmp_path) is None


def test_nan_loss_stops_without_poisoned_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, save_every=5)
    real = trainer.objective

    def poisoned(model, batch):
        loss = real(model, batch)
        return loss * float("nan") if trainer.step == 7 else loss

    trainer.objective = poisoned
    with pytest.raises(TrainingDiverged, match="loss is nan at step 8"):
        trainer.fit()
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000005"]


def test_grad_accum_equals_bigger_batch(tmp_path):
    # float32: the two sums differ by rounding only (bfloat16 autocast, the "auto" dtype on
    # CPUs with native bf16, rounds each micro-batch's activations differently).
    a = make_trainer(tmp_path / "a", dtype="float32")
    a.loop.max_steps, a.loop.batch_size, a.loop.grad_accum = 3, 4, 2
    b = make_trainer(tmp_path / "b", dtype="float32")
    b.loop.max_steps, b.loop.batch_size = 3, 8
    assert abs(a.fit().final_loss - b.fit().final_loss) < 1e-5


def test_bf16_autocast_and_grad_checkpointing_run(tmp_path):
    trainer = make_trainer(tmp_path, dtype="bfloat16", grad_checkpointing=True)
    trainer.loop.max_steps = 4
    assert math.isfinite(trainer.fit().final_loss)


def _gradients_and_mlp_calls(model: torch.nn.Module, batch: torch.Tensor):
    """Every parameter's gradient of one backward pass, and how often each block's MLP ran."""
    calls = []
    for block in model.blocks:
        block.mlp.register_forward_pre_hook(lambda *_: calls.append(1))  # on entry: recomputation
        # stops early, right after the last tensor backward needs
    causal_lm_loss(model, batch).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}, len(calls)


def test_grad_checkpointing_recomputes_blocks_and_gives_the_same_gradients(tmp_path):
    batch = torch.from_numpy(periodic_tokens()[:4 * 9].astype("int64")).view(4, 9)
    plain, plain_calls = _gradients_and_mlp_calls(tiny_model(), batch)
    trainer = make_trainer(tmp_path, grad_checkpointing=True)  # the Trainer's own wiring
    checkpointed, checkpointed_calls = _gradients_and_mlp_calls(trainer.model, batch)
    n_blocks = len(trainer.model.blocks)
    assert (plain_calls, checkpointed_calls) == (n_blocks, 2 * n_blocks)  # recomputed once
    assert plain.keys() == checkpointed.keys()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_schedule():
    kw = dict(lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)
    assert lr_at(0, **kw) == pytest.approx(0.1) and lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.55) and lr_at(110, **kw) == pytest.approx(0.1)
    assert lr_at(60, schedule="linear", **kw) == pytest.approx(0.55)
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_at(20, schedule="step", **kw)


def _fake_clock(monkeypatch, seconds_per_call: float) -> None:
    """Every `time.perf_counter()` the Trainer reads advances by `seconds_per_call`."""
    import zenlm.train.trainer as trainer_module

    ticks = iter(range(10**9))
    fake = type("FakeTime", (), {"perf_counter": staticmethod(
        lambda: next(ticks) * seconds_per_call)})
    monkeypatch.setattr(trainer_module, "time", fake)


@pytest.mark.parametrize("by_time", [True, False])
def test_schedule_by_time_fits_warmup_and_decay_to_the_budget(tmp_path, monkeypatch, by_time):
    _fake_clock(monkeypatch, 1.0)
    trainer = make_trainer(tmp_path, max_steps=1000, max_minutes=1.0, eval_every=0,
                           save_every=0, schedule_by_time=by_time)
    result = trainer.fit(resume="none")
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if "lr" in r]
    assert result.steps == len(lrs) < 100  # the clock (60 fake seconds) ended the run
    if by_time:  # warm-up (3 of 1000 steps' worth) then cosine decay ending with the budget
        peak = lrs.index(max(lrs))
        assert max(lrs) == pytest.approx(1e-2, rel=0.05) and peak <= 2
        assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:], strict=False))
        assert lrs[-1] < 1.2e-3  # min_lr is 1e-3
    else:  # the step schedule has barely begun when time runs out
        assert lrs[-1] > 0.9e-2
    with pytest.raises(ValueError, match="schedule_by_time needs train.max_minutes > 0"):
        LoopConfig(schedule_by_time=True)


def _logged_lrs(folder) -> list[float]:
    rows = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    return [r["lr"] for r in rows if "lr" in r]


def test_schedule_fits_max_minutes_decays_within_a_cut_and_runs_by_steps_when_it_fits(
    tmp_path, monkeypatch
):
    _fake_clock(monkeypatch, 1.0)
    settings = dict(eval_every=0, save_every=0)
    # 1000 planned steps, 60 fake seconds: the clock cuts the run, and the schedule ends with it
    cut = make_trainer(tmp_path / "cut", max_steps=1000, max_minutes=1.0,
                       schedule_fits_max_minutes=True, **settings).fit(resume="none")
    lrs = _logged_lrs(tmp_path / "cut")
    assert cut.steps == len(lrs) < 100
    peak = lrs.index(max(lrs))
    assert max(lrs) == pytest.approx(1e-2, rel=0.05)
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:], strict=False))
    assert lrs[-1] < 1.2e-3  # min_lr is 1e-3; without the option it would still be ~1e-2
    # 20 steps well inside an hour: the same rates, step for step, as a run without it
    fits = make_trainer(tmp_path / "fits", max_steps=20, max_minutes=60.0,
                        schedule_fits_max_minutes=True, **settings).fit(resume="none")
    by_steps = make_trainer(tmp_path / "steps", max_steps=20, max_minutes=60.0,
                            **settings).fit(resume="none")
    assert fits.steps == by_steps.steps == 20
    assert _logged_lrs(tmp_path / "fits") == _logged_lrs(tmp_path / "steps")
    with pytest.raises(ValueError, match="schedule_fits_max_minutes needs train.max_minutes > 0"):
        LoopConfig(schedule_fits_max_minutes=True)
    with pytest.raises(ValueError, match="two ways to schedule; set one"):
        LoopConfig(max_minutes=5.0, schedule_by_time=True, schedule_fits_max_minutes=True)


def test_lr_scales_multiply_the_scheduled_rate_per_prefix(tmp_path):
    """Adam's first step moves each weight with a gradient by exactly the learning rate
    (m/sqrt(v) = sign(g) after bias correction): so a scaled prefix moves `scale` times more."""
    tokens = periodic_tokens()
    scales = {"blocks.0.mlp.": 30.0, "blocks.0.mlp.down.": 7.0}  # the longest prefix wins
    trainer = Trainer(tiny_model(), causal_lm_loss, BlockSampler(tokens[:3500], 8),
                      BlockSampler(tokens[3500:], 8, shuffle=False),
                      optim=OptimConfig(lr=1e-4, warmup_steps=0, schedule="constant",
                                        weight_decay=0.0, eps=1e-12, lr_scales=scales),
                      loop=LoopConfig(out_dir=str(tmp_path), max_steps=1, batch_size=4,
                                      eval_every=0, save_every=0, progress=False))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.fit()
    expected = {"blocks.0.mlp.gate.weight": 30.0, "blocks.0.mlp.up.weight": 30.0,
                "blocks.0.mlp.down.weight": 7.0, "blocks.0.attn.q.weight": 1.0,
                "final_norm.weight": 1.0}
    for name, param in trainer.model.named_parameters():
        if name in expected:
            moved = (param.detach() - before[name]).abs().double()
            moved = moved[moved > 0]
            assert moved.numel() > 0, name
            torch.testing.assert_close(moved, torch.full_like(moved, 1e-4 * expected[name]),
                                       rtol=1e-3, atol=0)


def test_an_lr_scale_naming_no_trainable_parameter_is_refused():
    with pytest.raises(ValueError, match=r"'head\.': no trainable parameter is named so; "
                                         r"the trainable ones start with \['blocks\.', "):
        adamw(tiny_model(), OptimConfig(lr_scales={"head.": 10.0}))
