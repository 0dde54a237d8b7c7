"""What `zenlm explain` explains: a model loaded as stored, and what kind of model it is."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zenlm.config import ModelConfig
from zenlm.tasks.checkpoint import backbone_of

#: Fine-tuned tasks whose outputs are attributed (others are explained as their backbone).
ATTRIBUTED_TASKS = ("classify", "ner")
KIND_NAMES = {"causal": "a causal LM", "encoder": "an encoder"}


@dataclass
class Subject:
    """A model to explain.

    Attributes:
        model: The network run on the text: ids (1, T) -> logits.
        tokenizer: Its tokenizer.
        kind: "causal" (next-token logits), "encoder" (hidden states), "classify"
            (class logits (1, C)) or "ner" (tag logits (1, T, C)).
        source: What was loaded.
        labels: Class or tag names (classify, ner).
    """

    model: nn.Module
    tokenizer: Any
    kind: str
    source: str
    labels: list[str] = field(default_factory=list)

    @property
    def config(self) -> ModelConfig:
        """The backbone's configuration."""
        return backbone_of(self.model).config

    def encode(self, text: str) -> list[int]:
        """The text's ids as the model reads them (its special tokens included).

        Raises:
            ValueError: empty text, or more tokens than the model's context.
        """
        if not text.strip():
            raise ValueError("--text is empty; give the text to explain")
        ids = self.tokenizer.encode(text)
        limit = self.config.context_length
        if len(ids) > limit:
            raise ValueError(f"the text is {len(ids)} tokens; {self.source} reads at most "
                             f"{limit} (its context length): shorten the text")
        return ids

    def run(self, ids: list[int]) -> torch.Tensor:
        """The model's float64 logits on one text (batch 1), or its hidden states (encoder)."""
        return self.model(torch.tensor([ids])).double()

    def label_index(self, target: str | None) -> int | None:
        """The index of `--target` among the labels (None when not given).

        Raises:
            ValueError: the model has no labels, or `target` is not one of them.
        """
        if target is None:
            return None
        if self.kind not in ATTRIBUTED_TASKS:
            raise ValueError(f"--target {target!r} needs a classifier or token classifier (a "
                             f"`zenlm finetune --task classify|ner` folder); {self.source} is "
                             f"{KIND_NAMES.get(self.kind, self.kind)}")
        if target not in self.labels:
            raise ValueError(f"--target {target!r} is not a label of {self.source}; its "
                             f"labels: {', '.join(self.labels)}")
        return self.labels.index(target)


def load_subject(model: str | Path) -> Subject:
    """Load `model` in float32 exactly as stored (no quantization), in eval mode.

    A `zenlm finetune` classify or ner folder loads with its head; anything else
    `zenlm.load` reads loads as its network (a causal LM or an encoder).

    Raises:
        ValueError: an encoder-decoder (not supported by explain).
    """
    import zenlm
    from zenlm.models import DecoderLM, Seq2SeqLM
    from zenlm.tasks.checkpoint import load_task_model, read_task_info

    folder = Path(model)
    if (folder / "task.json").is_file() and read_task_info(folder).task in ATTRIBUTED_TASKS:
        network, tokenizer, info = load_task_model(folder)
        return Subject(network, tokenizer, info.task, str(folder), list(info.labels))
    lm = zenlm.load(model, quantize=None)
    if isinstance(lm.model, Seq2SeqLM):
        raise ValueError(f"{lm.source} is an encoder-decoder; zenlm explain reads causal LMs, "
                         "encoders and classify/ner fine-tunes")
    kind = "causal" if isinstance(lm.model, DecoderLM) else "encoder"
    return Subject(lm.model.eval(), lm.tokenizer, kind, lm.source)
