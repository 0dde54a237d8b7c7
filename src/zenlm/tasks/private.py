"""`zenlm finetune --dp-epsilon E`: the task side of differentially private fine-tuning.

The DP-SGD mechanics (per-sample gradients, clipping, noise, Poisson sampling, the
accountant) are `zenlm.train.privacy`; this module checks a fine-tuning run's options
against them, solves the plan for the run's data, and writes what the released model
folder says about its privacy (`privacy.json`: epsilon spent, delta, noise, clipping,
steps, sample rate; never the run's secret).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from zenlm.tasks.spec import TaskSpec

PUBLIC_FILE = "privacy.json"


def check_options(opts: Any, spec: TaskSpec) -> None:
    """Refuse DP flags without --dp-epsilon, and run options that break the guarantee.

    Raises:
        ValueError: names the option and why.
    """
    if opts.dp_epsilon is None:
        for name, default in (("dp_delta", 1e-5), ("dp_max_grad_norm", 1.0),
                              ("dp_accountant", "rdp"), ("dp_physical_batch", 32),
                              ("dp_clipping", "ghost")):
            if getattr(opts, name) != default:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} applies to private runs only; add --dp-epsilon E")
        return
    refused = {
        "minutes": "--minutes trains until the clock ends, past the steps the noise was "
                   "solved for; use --epochs or --max-steps (and --max-minutes to stop early)",
        "class_weights": "--class-weights derives the loss from the training labels' counts "
                         "outside the DP mechanism, and couples the examples of a batch",
        "extend_vocab": "--extend-vocab picks tokens from the training text outside the DP "
                        "mechanism",
    }
    for name, why in refused.items():
        if getattr(opts, name):
            raise ValueError(f"refused under --dp-epsilon: {why}")
    if opts.dp_clipping not in ("ghost", "exact"):
        raise ValueError(f"--dp-clipping must be ghost or exact, got {opts.dp_clipping!r}")
    if opts.dp_physical_batch < 0:
        raise ValueError(f"--dp-physical-batch must be >= 0, got {opts.dp_physical_batch}")
    spec.private_objective()  # raises, naming the task, when it has no per-example loss


def dp_float(value: Any, flag: str) -> float:
    """A DP flag's value as a float (the CLI hands over text for options without default).

    Raises:
        ValueError: not a number.
    """
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{flag} must be a number, got {value!r}") from None


def check_units(features: list) -> None:
    """One training feature per example: the privacy unit the guarantee is about.

    Raises:
        ValueError: an example was cut into several pieces (ner's long sentences).
    """
    counts = Counter(getattr(f, "sentence", i) for i, f in enumerate(features))
    unit, pieces = max(counts.items(), key=lambda kv: kv[1], default=(0, 1))
    if pieces > 1:
        raise ValueError(f"refused under --dp-epsilon: training sentence {unit} is split "
                         f"into {pieces} pieces at --max-length; the guarantee is per "
                         "training feature, so raise --max-length until none is split")


def private_training(opts: Any, n_train: int, steps: int) -> Any:
    """The `PrivateTraining` of a run: the noise solved for its data, batch and steps."""
    from zenlm.train.privacy import PrivateTraining, plan_privacy

    plan = plan_privacy(dp_float(opts.dp_epsilon, "--dp-epsilon"),
                        dp_float(opts.dp_delta, "--dp-delta"),
                        dp_float(opts.dp_max_grad_norm, "--dp-max-grad-norm"),
                        batch_size=opts.batch_size, dataset_size=n_train, steps=steps,
                        accountant=opts.dp_accountant)
    return PrivateTraining(plan, clipping=opts.dp_clipping)


def planned_steps(opts: Any, n_train: int) -> int:
    """The run's optimizer steps (as the Trainer will be told)."""
    return opts.max_steps or math.ceil(opts.epochs * n_train / opts.batch_size)


def write_public_record(privacy: Any, folder: str | Path) -> dict[str, Any]:
    """privacy.json of a released model folder; returns its summary."""
    record = privacy.public_record()
    Path(folder, PUBLIC_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return privacy.summary()


def read_public_record(folder: str | Path) -> dict[str, Any] | None:
    """The `dp` record of a model folder (None for a non-private model)."""
    path = Path(folder, PUBLIC_FILE)
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    record.pop("history", None)
    return record
