"""`zenlm evaluate --task membership`: a loss-threshold membership-inference attack.

Scores a `zenlm finetune` folder (a task with a per-example loss: classify, ner) on rows
it was trained on (`--members`) and rows it never saw (`--non-members`); the attack's
arithmetic and report are `zenlm.eval.membership`.
"""

from __future__ import annotations

import argparse

from zenlm.eval.membership import attack_report
from zenlm.eval.registry import Evaluation
from zenlm.eval.report import Report


def example_losses(model_dir: str, path: str) -> list[float]:
    """The loss of each labelled example of `path` under a fine-tuned model, one at a time.

    The loss is the task's per-example loss (`TaskSpec.private_objective`: classify's
    cross-entropy, ner's mean token cross-entropy of a sentence).

    Raises:
        ValueError: the model's task has no per-example loss.
    """
    import torch

    from zenlm.tasks.checkpoint import backbone_of, load_task_model
    from zenlm.tasks.registry import get_task
    from zenlm.tasks.spec import pad_id

    network, tokenizer, info = load_task_model(model_dir)
    spec = get_task(info.task)
    try:
        loss = spec.private_objective(info)
    except ValueError:
        raise ValueError(f"--task membership needs a per-example loss, which task "
                         f"{info.task!r} ({model_dir}) has not") from None
    pad = pad_id(tokenizer, backbone_of(network).config)
    features = spec.encode(tokenizer, spec.read(path, info.labels), info)
    with torch.inference_mode():
        return [float(loss(network, spec.collate([f], pad))[0]) for f in features]


def run(model: str, data: str | None = None, quantize: str = "none", *,
        members: str | None = None, non_members: str | None = None) -> Report:
    """The loss-threshold attack on `model` (a `zenlm finetune` classify or ner folder)."""
    if data is not None:
        raise ValueError("--task membership reads --members F and --non-members F, not --data")
    if members is None or non_members is None:
        raise ValueError("--task membership needs --members F (training rows) and "
                         "--non-members F (rows never trained on)")
    if quantize != "none":
        raise ValueError(f"--task membership scores the weights as trained; got --quantize "
                         f"{quantize}")
    from zenlm.tasks.private import read_public_record

    inside, outside = example_losses(model, members), example_losses(model, non_members)
    settings = {"model": model, "members": members, "non_members": non_members,
                "n_members": len(inside), "n_non_members": len(outside),
                "attack": "loss threshold"}
    return attack_report(inside, outside, settings, read_public_record(model))


def add_options(group: argparse._ArgumentGroup) -> None:
    """--members and --non-members."""
    group.add_argument("--members", default=None,
                       help="membership: labelled rows the model was trained on")
    group.add_argument("--non-members", default=None,
                       help="membership: labelled rows it never saw (same distribution)")


EVALUATION = Evaluation("membership", "loss-threshold membership-inference attack on a "
                        "fine-tuned classify/ner model: AUC, ROC, TPR at low FPR", add_options, run)
