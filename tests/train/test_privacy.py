"""DP-SGD (zenlm.train.privacy) against Opacus's own accountant and slow oracles.

Oracles: Opacus's `get_noise_multiplier` and accountants computed here for the same
(sample rate, steps, sigma, delta); per-example gradients from one plain autograd
backward per example (no hooks involved); the clipping rule written out in float64.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from torch import nn

from zenlm.config import ModelConfig
from zenlm.models.build import build_model
from zenlm.models.heads import SequenceClassifier
from zenlm.nn.lora import apply_lora
from zenlm.tasks.batching import TensorBatch
from zenlm.tasks.classify import (
    ClassifyFeature,
    classify_loss,
    classify_losses,
    collate_classify,
)
from zenlm.train.config import LoopConfig, OptimConfig
from zenlm.train.privacy import PrivacyError, PrivateTraining, plan_privacy
from zenlm.train.trainer import Trainer, adamw

N = 48  # training examples of the tiny runs
SECRET = bytes(range(32))


def tiny_classifier(*, lora: bool = False, arch: str = "encoder") -> nn.Module:
    """A 2-block encoder (learned positions, LayerNorm, token types) or RMSNorm decoder."""
    torch.manual_seed(0)
    if arch == "encoder":
        config = ModelConfig(vocab_size=40, d_model=16, n_layers=2, n_heads=2, d_ff=32,
                             max_seq_len=32, arch="encoder", positions="learned",
                             norm="layernorm", norm_bias=True, embed_norm=True, pre_norm=False,
                             final_norm=False, gated_mlp=False, activation="gelu",
                             qkv_bias=True, type_vocab_size=2, hf_model_type="bert")
    else:
        config = ModelConfig(vocab_size=40, d_model=16, n_layers=2, n_heads=2, d_ff=32,
                             max_seq_len=32)
    model = SequenceClassifier(build_model(config), 2, pooling="mean", dropout=0.0)
    if lora:
        apply_lora(model.backbone, rank=2, alpha=4.0, dropout=0.0, target_modules=["q", "v"])
    return model


def features(n: int = N) -> list[ClassifyFeature]:
    gen = torch.Generator().manual_seed(1)
    rows = []
    for i in range(n):
        length = 3 + i % 7
        rows.append(ClassifyFeature(torch.randint(1, 40, (length,), generator=gen).tolist(),
                                    i % 2))
    return rows


def collate(rows: list) -> TensorBatch:
    return collate_classify(rows, pad_id=0)


def private_trainer(tmp_path: Path, plan, *, steps: int, lora: bool = False,
                    save_every: int = 0, objective=classify_losses,
                    secret: bytes = SECRET, clipping: str = "ghost"
                    ) -> tuple[Trainer, PrivateTraining]:
    privacy = PrivateTraining(plan, secret=secret, clipping=clipping)
    loop = LoopConfig(out_dir=str(tmp_path), max_steps=steps, batch_size=8, eval_every=0,
                      eval_batches=0, save_every=save_every, keep_last=2, progress=False,
                      export_hf=False, dtype="float32", seed=3)
    privacy.check_loop(loop)
    trainer = Trainer(tiny_classifier(lora=lora), privacy.objective(objective),
                      privacy.sampler(features(), collate, block_size=10), None,
                      optim=OptimConfig(lr=1e-2, warmup_steps=0, schedule="constant",
                                        grad_clip=0.0),
                      loop=loop, model_transform=privacy.transform_model,
                      optimizer_factory=privacy.make_optimizer(adamw),
                      save_extra=privacy.save_state, load_extra=privacy.load_state,
                      eval_extras=privacy.eval_record)
    return trainer, privacy


def small_plan(accountant: str = "rdp", steps: int = 6):
    return plan_privacy(3.0, 1e-3, 0.5, batch_size=8, dataset_size=N, steps=steps,
                        accountant=accountant)


# ------------------------------------------------------------------ accounting
@pytest.mark.parametrize(("accountant", "clipping"), [("rdp", "ghost"), ("prv", "ghost"),
                                                     ("rdp", "exact")])
def test_noise_and_final_epsilon_equal_opacus_accountant(tmp_path, accountant, clipping):
    plan = small_plan(accountant)
    rate = 8 / N
    assert plan.sample_rate == rate
    assert plan.noise_multiplier == get_noise_multiplier(
        target_epsilon=3.0, target_delta=1e-3, sample_rate=rate, steps=6, accountant=accountant)
    trainer, privacy = private_trainer(tmp_path, plan, steps=6, clipping=clipping)
    trainer.fit(resume="none")
    assert privacy.summary()["clipping"] == clipping
    oracle = RDPAccountant() if accountant == "rdp" else PRVAccountant()
    for _ in range(6):
        oracle.step(noise_multiplier=plan.noise_multiplier, sample_rate=rate)
    expected = oracle.get_epsilon(delta=1e-3)
    assert privacy.epsilon() == pytest.approx(expected, rel=1e-9)
    assert privacy.summary()["steps"] == 6
    # the solved noise reaches the target within Opacus's search tolerance (0.01)
    assert abs(privacy.epsilon() - 3.0) <= 0.011
    # epsilon is logged with the step it was reached at (not only at the end)
    assert privacy.eval_record()["dp_epsilon"] == privacy.epsilon()


# ---------------------------------------------------------- per-sample gradients
@pytest.mark.parametrize("setting", ["encoder-full", "encoder-lora", "decoder-full"])
def test_per_sample_gradients_are_exact_and_clipped(setting):
    arch, method = setting.split("-")
    model = tiny_classifier(lora=method == "lora", arch=arch)
    rows = features(6)
    classify_loss(model, collate(rows)).backward()
    for param in model.parameters():  # a decoder's LM head is unused by the classifier
        param.requires_grad_(param.grad is not None)
    oracle = []  # one plain backward per example
    for row in rows:
        model.zero_grad()
        classify_loss(model, collate([row])).backward()
        oracle.append({n: p.grad.double().clone() for n, p in model.named_parameters()
                       if p.requires_grad})
    model.zero_grad()
    clip = 0.05
    plan = plan_privacy(8.0, 1e-5, clip, batch_size=6, dataset_size=1000, steps=10)
    privacy = PrivateTraining(plan, secret=SECRET, clipping="exact")
    privacy.transform_model(model)
    optimizer = privacy.make_optimizer(adamw)(model, OptimConfig(lr=1e-3))
    model.train()
    classify_loss(model, collate(rows)).backward()
    named = dict(model.named_parameters())
    for name, param in named.items():
        if not param.requires_grad:
            continue
        assert param.grad_sample.shape == (6, *param.shape), name
        for i in range(6):
            torch.testing.assert_close(param.grad_sample[i].double(), oracle[i][name],
                                       rtol=1e-4, atol=1e-6, msg=f"{name} example {i}")
    # clipping: each example's whole gradient scaled to norm <= C, then summed
    norms = [math.sqrt(sum(float((g ** 2).sum()) for g in o.values())) for o in oracle]
    assert max(norms) > clip  # the bound binds
    factors = [min(1.0, clip / (n + 1e-6)) for n in norms]
    assert all(f * n <= clip + 1e-9 for f, n in zip(factors, norms, strict=True))
    optimizer.clip_and_accumulate()
    for name, param in named.items():
        if param.requires_grad:
            expected = sum(f * o[name] for f, o in zip(factors, oracle, strict=True))
            torch.testing.assert_close(param.summed_grad.double(), expected, rtol=1e-4,
                                       atol=1e-7)


def test_lora_private_training_leaves_base_weights_unchanged(tmp_path):
    trainer, _ = private_trainer(tmp_path, small_plan(), steps=4, lora=True)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.fit(resume="none")
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    trained = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert changed == trained
    assert trained and all("lora_" in n or n.startswith("head.") for n in trained)


# ------------------------------------------------------------------ resume
class Killed(Exception):
    pass


@pytest.mark.parametrize("clipping", ["ghost", "exact"])
def test_resume_after_a_kill_keeps_the_accountant_exactly(tmp_path, clipping):
    plan = small_plan(steps=8)
    whole, whole_dp = private_trainer(tmp_path / "whole", plan, steps=8, clipping=clipping)
    whole.fit(resume="none")

    calls = {"n": 0}

    def dies_at_step_6(model, batch):
        calls["n"] += 1
        if calls["n"] == 6:
            raise Killed
        return classify_losses(model, batch)

    first, _ = private_trainer(tmp_path / "cut", plan, steps=8, save_every=4,
                               objective=dies_at_step_6, clipping=clipping)
    with pytest.raises(Killed):
        first.fit(resume="none")
    saved = json.loads((tmp_path / "cut/checkpoints/step-00000004/privacy.json").read_text())
    assert saved["history"] == [[plan.noise_multiplier, plan.sample_rate, 4]]
    # a fresh process: another secret until the checkpoint's is restored
    again, again_dp = private_trainer(tmp_path / "cut", plan, steps=8, save_every=4,
                                      secret=b"x" * 32, clipping=clipping)
    again.fit(resume="auto")
    assert again_dp.accountant.history == whole_dp.accountant.history
    assert again_dp.epsilon() == whole_dp.epsilon()
    for (name, a), b in zip(again.model.state_dict().items(), whole.model.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name  # same batches, same noise


def test_resume_with_other_settings_is_refused(tmp_path):
    trainer, _ = private_trainer(tmp_path, small_plan(), steps=4, save_every=4)
    trainer.fit(resume="none")
    other = plan_privacy(3.0, 1e-3, 0.25, batch_size=8, dataset_size=N, steps=6)
    again, _ = private_trainer(tmp_path, other, steps=6)
    with pytest.raises(PrivacyError, match="max_grad_norm=0.25.*started with max_grad_norm=0.5"):
        again.fit(resume="auto")


# ---------------------------------------------------------------- refusals
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"epsilon": 0.0}, "--dp-epsilon must be a finite number > 0, got 0.0"),
    ({"epsilon": -1.0}, "--dp-epsilon must be a finite number > 0"),
    ({"delta": 1 / N}, r"--dp-delta must be in \(0, 1/N\)"),
    ({"max_grad_norm": 0.0}, "--dp-max-grad-norm must be > 0"),
    ({"accountant": "gdp2"}, "--dp-accountant must be one of"),
])
def test_bad_privacy_settings_are_refused_by_name(kwargs, message):
    args = {"epsilon": 1.0, "delta": 1e-5, "max_grad_norm": 1.0, "accountant": "rdp", **kwargs}
    with pytest.raises(PrivacyError, match=message):
        plan_privacy(args["epsilon"], args["delta"], args["max_grad_norm"], batch_size=8,
                     dataset_size=N, steps=5, accountant=args["accountant"])


def test_loop_settings_that_break_the_guarantee_are_refused():
    privacy = PrivateTraining(small_plan(), secret=SECRET)
    with pytest.raises(PrivacyError, match="gradient accumulation"):
        privacy.check_loop(LoopConfig(grad_accum=2))
    with pytest.raises(PrivacyError, match="torch.compile"):
        privacy.check_loop(LoopConfig(compile=True))
    with pytest.raises(PrivacyError, match="one process"):
        privacy.check_loop(LoopConfig(), distributed=True)


def test_layers_without_exact_per_sample_gradients_are_refused():
    class Gain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.scale

    privacy = PrivateTraining(small_plan(), secret=SECRET)
    with pytest.raises(PrivacyError, match=r"layer '1' \(Gain, trainable \['scale'\]\)"):
        privacy.transform_model(nn.Sequential(nn.Linear(3, 3), Gain()))
    with pytest.raises(PrivacyError, match="BatchNorm1d"):
        privacy.transform_model(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)))
    dropped = tiny_classifier()
    apply_lora(dropped.backbone, rank=2, dropout=0.1, target_modules=["q"])
    with pytest.raises(PrivacyError, match="--lora-dropout 0"):
        privacy.transform_model(dropped)


def test_frozen_and_trainable_mismatches_are_refused():
    privacy = PrivateTraining(small_plan(), secret=SECRET)
    model = tiny_classifier()
    privacy.transform_model(model)
    head_only = lambda m, o: torch.optim.SGD(m.head.parameters(), lr=0.1)  # noqa: E731
    with pytest.raises(PrivacyError, match="trainable but not in the optimizer"):
        privacy.make_optimizer(head_only)(model, OptimConfig())
    unused = tiny_classifier()
    unused.spare = nn.Linear(2, 2)  # trainable, never in the forward pass
    privacy = PrivateTraining(small_plan(), secret=SECRET, clipping="exact")
    privacy.transform_model(unused)
    optimizer = privacy.make_optimizer(adamw)(unused, OptimConfig())
    unused.train()
    classify_loss(unused, collate(features(4))).backward()
    with pytest.raises(PrivacyError, match="'spare.weight' got no per-sample gradient"):
        optimizer.step()
    unused = tiny_classifier()
    unused.spare = nn.Linear(2, 2)
    ghost = PrivateTraining(small_plan(), secret=SECRET, clipping="ghost")
    ghost.transform_model(unused)
    ghost.make_optimizer(adamw)(unused, OptimConfig())
    with pytest.raises(PrivacyError, match="'spare.weight' got no per-example gradient norm"):
        ghost.objective(classify_losses)(unused, collate(features(4)))


def test_finetune_options_that_break_the_guarantee_are_refused():
    from zenlm.tasks.private import check_options
    from zenlm.tasks.registry import get_task
    from zenlm.tasks.runner import FinetuneOptions

    def refused(task: str = "classify", **kwargs) -> str:
        with pytest.raises(ValueError) as info:
            check_options(FinetuneOptions(task=task, model="m", train="t", **kwargs),
                          get_task(task))
        return str(info.value)

    assert "--minutes" in refused(dp_epsilon=1.0, minutes=5.0)
    assert "--class-weights" in refused(dp_epsilon=1.0, class_weights=True)
    assert "--extend-vocab" in refused(dp_epsilon=1.0, extend_vocab=10)
    assert "task 'qa'" in refused("qa", dp_epsilon=1.0)  # sft has its per-example loss
    assert "--dp-delta applies to private runs only" in refused(dp_delta=1e-6)
    assert "--dp-clipping applies to private runs only" in refused(dp_clipping="exact")
    assert "--dp-clipping must be ghost or exact, got 'fast'" in refused(dp_epsilon=1.0,
                                                                        dp_clipping="fast")


def test_ner_private_loss_is_each_sentence_own_loss():
    from zenlm.tasks.ner import IGNORE, token_loss_per_example

    torch.manual_seed(0)
    logits = torch.randn(3, 5, 4, dtype=torch.float64)
    labels = torch.tensor([[1, 2, IGNORE, IGNORE, IGNORE], [0, 3, 3, 1, IGNORE],
                           [2, IGNORE, IGNORE, IGNORE, IGNORE]])
    batch = TensorBatch(ids=torch.zeros(3, 5, dtype=torch.long), attention_mask=None,
                        labels=labels)
    got = token_loss_per_example(lambda ids, mask: logits, batch)
    per_sentence = []
    for row in range(3):  # the formula, slowly, in float64
        terms = [-(logits[row, t, labels[row, t]] - logits[row, t].exp().sum().log())
                 for t in range(5) if labels[row, t] != IGNORE]
        per_sentence.append(sum(terms) / len(terms))
    assert got.shape == (3,)
    torch.testing.assert_close(got.double(), torch.stack(per_sentence), rtol=1e-6, atol=0)


def test_a_sentence_split_into_pieces_is_refused():
    from zenlm.tasks.ner import TokenFeature
    from zenlm.tasks.private import check_units

    whole = [TokenFeature([1], [0], [0], sentence=i) for i in range(3)]
    check_units(whole)
    with pytest.raises(ValueError, match="sentence 1 is split into 2 pieces"):
        check_units([*whole, TokenFeature([1], [0], [0], sentence=1, first_word=5)])


@pytest.mark.parametrize("clipping", ["ghost", "exact"])
def test_physical_batches_give_the_same_private_step(tmp_path, clipping):
    """Length-sorted pieces of a Poisson draw: same per-sample grads, so the same update."""
    plan = small_plan()
    results = []
    for physical in (0, 3):
        privacy = PrivateTraining(plan, secret=SECRET, clipping=clipping)
        model = tiny_classifier()
        privacy.transform_model(model)
        optimizer = privacy.make_optimizer(adamw)(model, OptimConfig(lr=1e-2, grad_clip=0.0))
        data = privacy.sampler(features(), collate, block_size=10, physical_batch=physical)
        batch = data.batch(8 * 5, 8)  # step 5's draw
        assert physical == 0 or len(batch) > 1  # really cut into pieces
        model.train()
        loss = privacy.objective(classify_losses)(model, batch)
        loss.backward()
        held = [getattr(p, "grad_sample", None) for p in model.parameters() if p.requires_grad]
        if clipping == "ghost":  # no per-example gradient is left over, only norms were
            assert all(g is None for g in held)
        elif physical:  # earlier pieces were clipped and dropped: one piece's rows are held
            assert all(torch.is_tensor(g) and len(g) <= physical for g in held)
        optimizer.step()
        results.append((float(loss), {n: p.detach().clone() for n, p in
                                      model.named_parameters()}))
    with torch.no_grad():  # an evaluation through the private objective clips nothing
        expected = classify_losses(model, collate(features(8))).mean()
        got = privacy.objective(classify_losses)(model, collate(features(8)))
    assert float(got) == pytest.approx(float(expected), rel=1e-6)
    (whole_loss, whole), (pieces_loss, pieces) = results
    assert pieces_loss == pytest.approx(whole_loss, rel=1e-5)  # the draw's mean loss
    for name, value in whole.items():
        torch.testing.assert_close(pieces[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_poisson_draws_depend_on_the_secret_and_step_and_may_be_empty(tmp_path):
    plan = plan_privacy(3.0, 1e-3, 0.5, batch_size=1, dataset_size=N, steps=12)
    privacy = PrivateTraining(plan, secret=SECRET)
    data = privacy.sampler(features(), collate, block_size=10)
    draws = [data.indices(step) for step in range(12)]
    assert draws == [data.indices(step) for step in range(12)]  # a function of the step
    other = PrivateTraining(plan, secret=b"y" * 32).sampler(features(), collate, block_size=10)
    assert draws != [other.indices(step) for step in range(12)]
    empty = [step for step, drawn in enumerate(draws) if not drawn]
    assert empty  # q = 1/48: some steps draw nobody, and still add noise
    trainer, privacy = private_trainer(tmp_path, plan, steps=empty[0] + 1)
    trainer.train_data = privacy.sampler(features(), collate, block_size=10)
    trainer.loop.batch_size = 1
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.fit(resume="none")
    assert privacy.steps == empty[0] + 1
    assert not torch.equal(trainer.model.head.weight, before["head.weight"])


@pytest.mark.parametrize("clipping", ["ghost", "exact"])
def test_pieces_under_bfloat16_autocast_clip_in_float32_as_the_last_piece(clipping):
    """The Trainer runs the objective under autocast; earlier pieces' clipping must not be.

    Their per-example gradients and clipped sums are what the last piece's get from the
    optimizer's own step outside autocast: float32, and the same update as one pass.
    """
    plan = small_plan()
    updates = []
    for physical in (0, 3):
        privacy = PrivateTraining(plan, secret=SECRET, clipping=clipping)
        model = tiny_classifier()
        privacy.transform_model(model)
        optimizer = privacy.make_optimizer(adamw)(model, OptimConfig(lr=1e-2, grad_clip=0.0))
        batch = privacy.sampler(features(), collate, block_size=10,
                                physical_batch=physical).batch(8 * 5, 8)
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16):  # as Trainer._train_step
            loss = privacy.objective(classify_losses)(model, batch)
        loss.backward()
        optimizer.step()
        assert all(p.dtype == torch.float32 for p in model.parameters())
        updates.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    # bfloat16 forward passes of differently padded pieces differ in the last bits only
    print("DIFF", float((updates[1] - updates[0]).abs().max()))
    torch.testing.assert_close(updates[1], updates[0], rtol=0, atol=2e-3)
