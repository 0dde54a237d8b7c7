"""Predictions of a fine-tuned task model for every record of a file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

from zenlm.tasks.checkpoint import backbone_of
from zenlm.tasks.registry import get_task
from zenlm.tasks.spec import TaskInfo, pad_id


def predict_records(model: nn.Module, tokenizer: Any, info: TaskInfo, path: str | Path,
                    *, max_new_tokens: int = 256) -> Iterator[dict[str, Any]]:
    """One JSON-able record per input example (the task's `TaskSpec.predict`)."""
    pad = pad_id(tokenizer, backbone_of(model).config)
    yield from get_task(info.task).predict(model, tokenizer, info, path, pad,
                                           max_new_tokens=max_new_tokens)
