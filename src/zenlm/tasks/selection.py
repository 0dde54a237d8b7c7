"""Early stopping on a validation metric and best-checkpoint selection.

`MetricTrainer` is the one Trainer with its `evaluate` step extended (not its loop
copied): at every evaluation it also computes the task's headline metric on the
validation examples, keeps a copy of the best trainable weights, logs the metric to
`metrics.jsonl`, and ends the run after `patience` evaluations without improvement.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zenlm.train.trainer import Trainer


class MetricTrainer(Trainer):
    """A Trainer that selects the best model by a validation metric (higher is better).

    Args:
        *args: As for Trainer.
        metric: model -> score on the validation data (higher is better).
        patience: Evaluations without improvement before stopping (0: never stop early).
        on_eval: Called as on_eval(step, score, elapsed minutes) after each evaluation
            (`zenlm finetune` prints the validation metric with it).
        **kwargs: As for Trainer.
    """

    def __init__(self, *args: Any, metric: Callable[[nn.Module], float], patience: int = 0,
                 on_eval: Callable[[int, float, float], None] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metric, self.patience, self.on_eval = metric, patience, on_eval
        self.best_score: float | None = None
        self.best_step = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.history: list[tuple[int, float]] = []
        self._stale = 0

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """The Trainer's validation loss, plus the metric, best-weight copy and early stop."""
        loss = super().evaluate()
        score = float(self.metric(self.model))
        self.model.train()
        self.history.append((self.step, score))
        if self.on_eval is not None:
            self.on_eval(self.step, score, self.elapsed_s / 60)
        self._log({"step": self.step, "metric": score, "val_loss": loss,
                   **self.eval_extras()})
        if self.best_score is None or score > self.best_score:
            self.best_score, self.best_step, self._stale = score, self.step, 0
            self.best_state = {k: v.detach().clone() for k, v in self._trainable().items()}
        else:
            self._stale += 1
            if self.patience and self._stale >= self.patience:
                self.loop.max_steps = self.step  # the Trainer's loop ends after this step
        return loss

    def restore_best(self) -> None:
        """Load the best weights seen (the trainable ones; the rest never changed)."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state, strict=False)

    def _trainable(self) -> dict[str, torch.Tensor]:
        names = {n for n, p in self.model.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.model.state_dict().items() if k in names}

    def _log(self, record: dict[str, Any]) -> None:
        path = Path(self.loop.out_dir) / "metrics.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
