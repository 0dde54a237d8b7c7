"""A fine-tuned model as a program uses it: `zenlm.tasks.load_task(folder)(inputs)`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from zenlm.tasks.checkpoint import backbone_of, load_task_model
from zenlm.tasks.registry import get_task
from zenlm.tasks.spec import pad_id


class TaskModel:
    """A `zenlm finetune` output folder: its model, head, tokenizer and task.

    What each task predicts on and returns (one dict per input):

    - classify: a text -> {"text", "label", "probs"}
    - ner: a text (split at whitespace) or a list of words -> {"tokens", "tags"}
    - qa: {"question", "context"} -> {"id", "answer", "start", "end", "score"}
    - sft: a user message or a list of messages -> {"messages", "reply"}
    - translate: a source text -> {"source", "translation"}
    - summarize: an article -> {"article", "summary"}

    Attributes:
        task: The task it was fine-tuned for.
        labels: Its label names (classify, ner), else empty.
    """

    def __init__(self, folder: str | Path) -> None:
        self.model, self.tokenizer, self.info = load_task_model(folder)
        self.spec = get_task(self.info.task)
        self._pad = pad_id(self.tokenizer, backbone_of(self.model).config)

    @property
    def task(self) -> str:
        """The task it was fine-tuned for."""
        return self.info.task

    @property
    def labels(self) -> list[str]:
        """Its label names (classify, ner), else empty."""
        return list(self.info.labels)

    def predict(self, inputs: Sequence[Any], *, max_new_tokens: int = 256) -> list[dict]:
        """One prediction per input, batched (see the class docstring for the shapes).

        Raises:
            ValueError: an input this task cannot take (named, with what it takes).
        """
        examples = [self.spec.example_from(value) for value in inputs]
        with torch.inference_mode():
            return list(self.spec.predict_examples(self.model, self.tokenizer, self.info,
                                                   examples, self._pad,
                                                   max_new_tokens=max_new_tokens))

    def __call__(self, value: Any, **options: Any) -> dict:
        """The prediction for one input."""
        return self.predict([value], **options)[0]


def load_task(folder: str | Path) -> TaskModel:
    """Load a `zenlm finetune` output folder for predictions in a program."""
    return TaskModel(folder)
