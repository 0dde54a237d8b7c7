"""Learning-rate schedules: linear warmup, then cosine, linear or constant decay.

A schedule is a pure function of the step, so resuming needs only the step number.
"""

from __future__ import annotations

import math


def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, max_steps: int,
          schedule: str = "cosine") -> float:
    """Learning rate of optimizer step `step` (0-based).

    Raises:
        ValueError: an unknown schedule name.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    if schedule == "cosine":
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
    if schedule == "linear":
        return lr - progress * (lr - min_lr)
    raise ValueError(f"unknown schedule {schedule!r}; use cosine, linear or constant")
