"""The evaluations `zenlm evaluate --task T` runs besides the fine-tuning tasks' own.

Each module in `EVALUATION_MODULES` exposes `EVALUATION`, an `Evaluation`: its options
(added to the `evaluate` command in their own argument group) and the function that
runs it. Modules keep torch and model imports inside functions, so building the
command line stays fast.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass

from zenlm.eval.report import Report

EVALUATION_MODULES: tuple[str, ...] = (
    "zenlm.eval.perplexity",
    "zenlm.eval.choice",
    "zenlm.eval.generation",
    "zenlm.eval.bias",
    "zenlm.tasks.membership",  # membership-inference attack (privacy of fine-tuned models)
)


@dataclass(frozen=True)
class Evaluation:
    """One `--task` of `zenlm evaluate` that scores any model (not a fine-tuned head).

    Attributes:
        name: The `--task` value, e.g. "lm", "multiple-choice".
        help: One line for `zenlm evaluate --help`.
        add_options: Adds this task's own options to its argument group.
        run: `run(model=..., data=..., quantize=..., **own options) -> Report`.
    """

    name: str
    help: str
    add_options: Callable[[argparse._ArgumentGroup], None]
    run: Callable[..., Report]


def evaluations() -> dict[str, Evaluation]:
    """Every registered evaluation by task name."""
    found = (importlib.import_module(module).EVALUATION for module in EVALUATION_MODULES)
    return {evaluation.name: evaluation for evaluation in found}
