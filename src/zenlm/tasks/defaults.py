"""Per-task defaults of `zenlm finetune`'s settings that matter: one table, one resolver.

A `TaskSpec` names its own defaults in `TaskSpec.defaults` (e.g. classify trains at a
higher learning rate with frozen embeddings); every setting it leaves out takes
`GENERIC`. A value the user gives (a flag, or a `FinetuneOptions` field that is not None)
always wins. This is the pattern of `zenlm evaluate`'s shared flags (`--seed`,
`--batch-size`): the command line records only what was given, and the task supplies the
rest. The run records which settings came from the task (`summary.json`, task.json).

This module imports no torch, so building the command line stays fast.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: The settings a task may set its own default for, with the default of every other task.
GENERIC: dict[str, Any] = {
    "lr": 5e-5,
    "epochs": 1.0,
    "batch_size": 32,
    "max_length": 128,
    "warmup_fraction": 0.06,
    "freeze_embeddings": False,
    "freeze_layers": 0,
    "eval_every": 0,  # steps between validation evaluations (0: at the end only)
    "patience": 0,  # evaluations without improvement before stopping (0: never)
    "stride": 128,  # qa: overlap of context windows
    "n_best": 20,  # qa: start/end candidates per window when choosing the answer span
    "max_answer_length": 30,  # qa: longest answer span in tokens
}


def check_defaults(task: str, defaults: dict[str, Any]) -> None:
    """Refuse a task default that is not a tuned setting, or of another type.

    Raises:
        ValueError: names the task, the setting and the valid ones.
    """
    for name, value in defaults.items():
        if name not in GENERIC:
            raise ValueError(f"task {task!r} sets a default for {name!r}, which is not a "
                             f"per-task setting; valid: {', '.join(GENERIC)}")
        generic = GENERIC[name]
        if type(value) is not type(generic):
            raise ValueError(f"task {task!r}: default {name}={value!r} should be a "
                             f"{type(generic).__name__} like {generic!r}")


def task_defaults(spec: Any) -> dict[str, Any]:
    """Every tuned setting's default for the task `spec` (its own over `GENERIC`)."""
    return {**GENERIC, **spec.defaults}


def resolve(given: dict[str, Any], spec: Any) -> tuple[dict[str, Any], list[str]]:
    """The tuned settings of a run, and the names that came from the task's own defaults.

    Args:
        given: Setting name -> value, None where the user gave nothing.
        spec: The task's `TaskSpec`.

    Returns:
        (every tuned setting -> the value used, the names taken from `spec.defaults`).
    """
    values, from_task = {}, []
    for name, default in task_defaults(spec).items():
        value = given.get(name)
        if value is None:
            value = default
            if name in spec.defaults:
                from_task.append(name)
        values[name] = value
    return values, from_task


def _show(value: Any) -> str:
    """A default as the help shows it (1e-4 rather than 0.0001)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value and abs(value) < 1e-3:
        mantissa, exponent = f"{value:e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def default_help(name: str, specs: Iterable[Any]) -> str:
    """`default: classify 1e-4, ner 5e-5, qa 5e-5, ...` for `zenlm finetune --help`.

    Tasks without a default of their own for `name` are grouped as "others".
    """
    specs = list(specs)
    own = [f"{s.name} {_show(s.defaults[name])}" for s in specs if name in s.defaults]
    if all(s.defaults.get(name, GENERIC[name]) == GENERIC[name] for s in specs):
        return f"default: {_show(GENERIC[name])}"
    if len(own) < len(specs):
        own.append(f"others {_show(GENERIC[name])}")
    return "default: " + ", ".join(own)
