"""What a task is: `TaskSpec` (its data, model, loss and metrics) and `TaskInfo` (its settings).

A task module (classify.py, ner.py, qa.py, sft.py) holds the task's mechanics and one
`TaskSpec` instance, `SPEC`; `zenlm.tasks.registry` maps names to those instances.
Everything task-independent (the run, model selection, saving, the commands) goes
through the spec's methods, so no code outside a task's module asks which task it is.

`TaskInfo` is what a fine-tuned model folder records about its task (`task.json`),
so `predict` and `evaluate` rebuild the same head and encode inputs the same way.
"""

from __future__ import annotations

import dataclasses
import json
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import torch
from torch import nn

from zenlm.errors import CheckpointError
from zenlm.eval.report import Report
from zenlm.tasks.batching import TensorBatch

FORMAT = 2  # task.json layout; files without "format" are the (compatible) first layout


@dataclass
class TaskInfo:
    """A fine-tuned model's task settings, saved as task.json next to its weights.

    Attributes:
        task: Registered task name (see `zenlm.tasks.registry.task_names`).
        labels: Class names (classify) or tags, "O" first (ner); empty otherwise.
        max_length: Tokens per encoded example (or per QA window).
        stride: QA: overlapping tokens of consecutive context windows.
        pooling: classify: "cls", "mean" or "last" (None: the backbone's default).
        arch: The backbone's architecture ("encoder" or "decoder").
        base_model: What `--model` named when fine-tuning started.
        added_tokens: Tokens added to the vocabulary by `--extend-vocab`.
        dropout: Dropout of the task head while training.
        options: Settings of a task's own (JSON values, e.g. a translation's language
            pair), read only by that task's module.
        training: How it was fine-tuned: "settings" (the per-task settings used, see
            `zenlm.tasks.defaults`) and "from_task_defaults" (those the user did not give).
    """

    task: str
    labels: list[str] = field(default_factory=list)
    max_length: int = 128
    stride: int = 128
    pooling: str | None = None
    arch: str = "decoder"
    base_model: str = ""
    added_tokens: int = 0
    dropout: float = 0.1
    options: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """task.json text: the fields plus the layout version."""
        record = {"format": FORMAT, **dataclasses.asdict(self)}
        return json.dumps(record, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = "task.json") -> TaskInfo:
        """Parse task.json text (the current layout, or the first one, which lacks "format").

        Raises:
            CheckpointError: not a JSON object, a newer layout, or unknown or missing keys.
        """
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{where}: not valid JSON ({exc})") from exc
        if not isinstance(record, dict):
            raise CheckpointError(f"{where}: expected a JSON object, got {type(record).__name__}")
        version = record.pop("format", 1)
        if version not in (1, FORMAT):
            raise CheckpointError(f"{where}: format {version!r} is not one of (1, {FORMAT}); "
                                  "it was written by a newer zenlm")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(record) - names)
        if unknown:
            raise CheckpointError(f"{where}: unknown keys {unknown}; valid keys: {sorted(names)}")
        if "task" not in record:
            raise CheckpointError(f"{where}: no 'task' key")
        return cls(**record)


def text_input(value: Any, task: str, what: str = "a text (str)") -> str:
    """`value` if it is a non-empty string, else a ValueError saying what `task` takes."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"task {task!r} predicts on {what}, got {value!r}")
    return value


def pad_id(tokenizer: Any, config: Any) -> int:
    """The padding id: the tokenizer's, else config.json's, else 0."""
    value = tokenizer.pad_token_id
    return value if value is not None else (config.pad_token_id or 0)


Objective = Callable[[nn.Module, TensorBatch], torch.Tensor]
Example = TypeVar("Example")  # one read record (zenlm.data.tasks: TextExample, QAExample...)
Feature = TypeVar("Feature")  # one encoded record (ClassifyFeature, QAFeature...)


class TaskSpec(ABC, Generic[Example, Feature]):
    """One task: read, label, encode, collate, loss, model, predict, evaluate.

    Subclasses name their types, e.g. `TaskSpec[TextExample, ClassifyFeature]`.

    Attributes:
        name: The `--task` name.
        headline: The key of `evaluate`'s scores that selects the best model.
        higher_is_better: Whether a larger headline value is better (False for a loss).
        weighted: Whether the loss takes inverse-frequency class weights.
        parallel: Whether its data may come as two aligned files (source and target).
        defaults: Its own defaults of `zenlm.tasks.defaults.GENERIC`'s settings (lr,
            epochs, frozen layers, ...); the settings it leaves out take GENERIC's.
    """

    name: str
    headline: str
    higher_is_better: bool = True
    weighted: bool = False
    parallel: bool = False
    defaults: ClassVar[dict[str, Any]] = {}

    # ------------------------------------------------------------- data
    @abstractmethod
    def read(self, path: str | Path, labels: Sequence[str] | None = None, *,
             labelled: bool = True) -> list[Example]:
        """Examples of a task file.

        Labels outside `labels` are errors; with `labelled=False` missing labels are
        allowed (files to predict on).
        """

    def options(self, values: dict[str, Any]) -> dict[str, Any]:
        """The task's own settings (`TaskInfo.options`) from a run's settings `values`."""
        return {}

    def label_set(self, examples: list[Example]) -> list[str]:
        """The label names training examples use (empty for tasks without labels)."""
        return []

    def check_labels(self, labels: Sequence[str], examples: list[Example]) -> None:
        """Refuse validation `examples` whose labels never occur in training (`labels`)."""
        return None  # tasks without labels have nothing to check

    @abstractmethod
    def text_of(self, example: Example) -> str:
        """All the text of an example (for `--extend-vocab`'s character counts)."""

    def group_of(self, index: int, example: Example) -> Hashable:
        """The unit of the train/validation split (default: each example alone)."""
        return index

    def split(self, examples: list[Example], fraction: float,
              seed: int) -> tuple[list[Example], list[Example]]:
        """Seeded (train, validation) split by `group_of`, so no group is in both."""
        groups = [self.group_of(i, e) for i, e in enumerate(examples)]
        keys = sorted(set(groups))
        random.Random(seed).shuffle(keys)
        held = set(keys[: max(1, round(len(keys) * fraction))])
        return ([e for e, g in zip(examples, groups, strict=True) if g not in held],
                [e for e, g in zip(examples, groups, strict=True) if g in held])

    # ------------------------------------------------------- features
    @abstractmethod
    def encode(self, tokenizer: Any, examples: list[Example], info: TaskInfo, *,
               labelled: bool = True) -> list[Feature]:
        """Tokenized features of `examples` (targets included when `labelled`)."""

    def for_training(self, features: list[Feature], info: TaskInfo, *, pack: bool,
                     private: bool = False) -> list:
        """Training features as the sampler serves them (sft packs them into rows).

        Under DP (`private`), one feature per privacy unit (sft then does not pack).
        """
        return features

    @abstractmethod
    def collate(self, features: list, pad_id: int) -> TensorBatch:
        """A padded batch of features."""

    def class_labels(self, features: list[Feature]) -> list[int]:
        """Every target class index of `features` (for class weights; `weighted` tasks)."""
        raise ValueError(f"--class-weights is not available for task {self.name!r}")

    @abstractmethod
    def objective(self, class_weights: torch.Tensor | None = None, *,
                  info: TaskInfo | None = None) -> Objective:
        """(model, batch) -> scalar loss, the Trainer's objective (`info`: the run's settings)."""

    def private_objective(self, info: TaskInfo | None = None) -> Objective:
        """The loss for DP-SGD: (model, batch of B rows) -> each example's own loss (B,).

        Each example's loss must depend on that example alone (a token mean over the
        whole batch would couple them). Tasks without one refuse DP by name.
        """
        raise ValueError(f"differentially private fine-tuning is not available for task "
                         f"{self.name!r}: its loss is not a mean of per-example losses "
                         "(DP works for classify, ner and sft)")

    # ----------------------------------------------------------- model
    @abstractmethod
    def build_model(self, info: TaskInfo, backbone: nn.Module) -> nn.Module:
        """The task model around `backbone`, with a fresh head (or the backbone itself)."""

    def init_head(self, model: nn.Module, tokenizer: Any, info: TaskInfo,
                  prompts: str, pad_id: int) -> dict[str, str]:
        """Start the head from a text per label (`--label-prompts`); classify only."""
        raise ValueError(f"--label-prompts applies to task 'classify', not {self.name!r}")

    # ------------------------------------------------------- inference
    @abstractmethod
    def evaluate(self, model: nn.Module, tokenizer: Any, info: TaskInfo,
                 examples: list[Example], pad_id: int) -> dict[str, Any]:
        """Metrics of `model` on labelled `examples` (includes `headline` and "n")."""

    def report(self, model: nn.Module, tokenizer: Any, info: TaskInfo,
               examples: list[Example], pad_id: int, *, bins: int) -> Report:
        """What `zenlm evaluate` shows: `evaluate`'s scores (more in tasks that override it).

        `bins` is the number of calibration bins, for tasks that report calibration.
        """
        return Report(self.name, self.evaluate(model, tokenizer, info, examples, pad_id))

    @abstractmethod
    def example_from(self, value: Any) -> Example:
        """An example to predict on from what a program has in memory (see each task)."""

    @abstractmethod
    def predict_examples(self, model: nn.Module, tokenizer: Any, info: TaskInfo,
                         examples: list[Example], pad_id: int, *,
                         max_new_tokens: int = 256) -> Iterator[dict[str, Any]]:
        """One JSON-able record per example (labels, if any, are ignored)."""

    def predict(self, model: nn.Module, tokenizer: Any, info: TaskInfo, path: str | Path,
                pad_id: int, *, max_new_tokens: int = 256) -> Iterator[dict[str, Any]]:
        """One JSON-able record per example of `path` (labels in it are ignored)."""
        examples = self.read(path, labelled=False)
        yield from self.predict_examples(model, tokenizer, info, examples, pad_id,
                                         max_new_tokens=max_new_tokens)

    def score(self, scores: dict[str, Any]) -> float:
        """The headline metric of `evaluate`'s scores, oriented so higher is better."""
        value = float(scores[self.headline])
        return value if self.higher_is_better else -value
