"""Feeding task examples to the one Trainer.

The Trainer asks its data for `batch(first, count)` (sequence numbers of the run) and
hands the result, moved with `.to(device)`, to an objective `(model, batch) -> loss`.
`TaskSampler` serves task features that way: a seeded permutation per epoch (exact
resume: the batch of a step depends only on the seed and the step), collated into a
`TensorBatch` of padded tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import numpy as np
import torch

Feature = TypeVar("Feature")


class TensorBatch(dict):
    """Named tensors of one batch (ids, attention_mask, labels...), movable as one."""

    def to(self, device: torch.device | str) -> TensorBatch:
        """The same batch on `device`."""
        return TensorBatch({k: v.to(device) if torch.is_tensor(v) else v for k, v in self.items()})

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


class TaskSampler(Generic[Feature]):
    """Features in a seeded order, epoch after epoch, collated on demand.

    Args:
        features: The examples, already tokenized.
        collate: Builds a TensorBatch from a list of features.
        block_size: Tokens per sequence (the Trainer's throughput figure uses it).
        seed: Order seed.
        shuffle: Permute each epoch (False: file order, for validation).
        group_batch: With `lengths`, the batch size to group by length: each batch then
            holds texts of similar length (far less padding), batches in random order.
        lengths: Token count of each feature (for `group_batch`).
    """

    def __init__(
        self, features: Sequence[Feature], collate: Callable[[list[Feature]], TensorBatch],
        *, block_size: int, seed: int = 0, shuffle: bool = True, group_batch: int = 0,
        lengths: Sequence[int] | None = None,
    ) -> None:
        if not features:
            raise ValueError("no training examples")
        self.features, self.collate = list(features), collate
        self.block_size, self.seed, self.shuffle = block_size, seed, shuffle
        self.group_batch, self.lengths = group_batch, lengths
        self.blocks_per_epoch = len(self.features)
        self._epoch, self._order = -1, np.arange(len(self.features))

    def index(self, number: int) -> int:
        """Feature index of the run's sequence `number`."""
        epoch, within = divmod(number, len(self.features))
        if self.shuffle and epoch != self._epoch:
            self._epoch = epoch
            self._order = self._epoch_order(np.random.default_rng([self.seed, epoch]))
        return int(self._order[within])

    def _epoch_order(self, rng: np.random.Generator) -> np.ndarray:
        order = rng.permutation(len(self.features))
        if not self.group_batch or self.lengths is None:
            return order
        # Sort within chunks of 50 batches, cut into batches, shuffle the batches.
        size = self.group_batch
        lengths = np.asarray(self.lengths)
        chunks = [order[i:i + 50 * size] for i in range(0, len(order), 50 * size)]
        ordered = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in chunks])
        batches = [ordered[i:i + size] for i in range(0, len(ordered), size)]
        return np.concatenate([batches[i] for i in rng.permutation(len(batches))])

    def batch(self, first: int, count: int) -> TensorBatch:
        """Sequences first .. first + count - 1, collated."""
        return self.collate([self.features[self.index(n)] for n in range(first, first + count)])
