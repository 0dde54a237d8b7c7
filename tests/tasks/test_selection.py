"""Early stopping on a validation metric and best-checkpoint selection through the Trainer."""

from __future__ import annotations

import torch

from zenlm.config import ModelConfig
from zenlm.models import build_model
from zenlm.models.heads import SequenceClassifier
from zenlm.tasks.batching import TaskSampler
from zenlm.tasks.classify import ClassifyFeature, classify_loss, collate_classify
from zenlm.tasks.selection import MetricTrainer
from zenlm.train.config import LoopConfig, OptimConfig


def _setup(tmp_path, scores, patience, eval_every=2, max_steps=20):
    torch.manual_seed(0)
    decoder = build_model(ModelConfig(vocab_size=30, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                                      max_seq_len=16))
    model = SequenceClassifier(decoder, 2)
    features = [ClassifyFeature([1 + i % 7, 2, 3], i % 2) for i in range(16)]
    sampler = TaskSampler(features, lambda f: collate_classify(f, 0), block_size=3)
    calls = iter(scores)
    snapshots = {}

    def metric(m):
        score = next(calls)
        snapshots[score] = m.head.weight.detach().clone()
        return score

    trainer = MetricTrainer(
        model, classify_loss, sampler, None, metric=metric, patience=patience,
        optim=OptimConfig(lr=1e-2, warmup_steps=0),
        loop=LoopConfig(out_dir=str(tmp_path), max_steps=max_steps, batch_size=4,
                        eval_every=eval_every, eval_batches=0, save_every=0, progress=False),
    )
    return trainer, model, snapshots


def test_stops_after_patience_and_restores_the_best(tmp_path):
    trainer, model, snapshots = _setup(tmp_path, [0.5, 0.8, 0.7, 0.6, 0.9, 0.95], patience=2)
    result = trainer.fit(resume="none")
    assert result.steps == 8  # evaluations at 2, 4, 6, 8; no gain at 6 and 8
    assert trainer.best_step == 4 and trainer.best_score == 0.8
    trainer.restore_best()
    assert torch.equal(model.head.weight, snapshots[0.8])
    assert (tmp_path / "metrics.jsonl").read_text().count("metric") == 4


def test_without_patience_runs_to_the_end(tmp_path):
    trainer, _, _ = _setup(tmp_path, [0.1 * i for i in range(20)], patience=0, max_steps=6)
    assert trainer.fit(resume="none").steps == 6 and trainer.best_step == 6
