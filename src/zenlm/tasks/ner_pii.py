"""Names as PII: a fine-tuned token classifier (`zenlm finetune --task ner`) finds PER spans.

`zenlm data prepare --ner-model FOLDER` passes a `NameDetector` to the scrubber, which then
replaces every person entity by `<PERSON>` after the pattern detectors (e-mails, phones, ...)
have had their turn. The text is split into words the way CoNLL splits it (punctuation apart),
each sentence tagged through the task's own `encode_words` and `predict_tags`, and a B-PER
word with the I-PER words after it becomes one character span.
"""

from __future__ import annotations

import re
from pathlib import Path

from zenlm.errors import CheckpointError
from zenlm.tasks.checkpoint import backbone_of, load_task_model
from zenlm.tasks.ner import encode_words, predict_tags
from zenlm.tasks.spec import pad_id

Span = tuple[int, int, str]
_WORD = re.compile(r"\w+(?:['’.-]\w+)*|[^\w\s]")
_SENTENCE_END = {".", "!", "?", "。", "！", "？"}


class NameDetector:
    """Callable text -> [(start, end, "PERSON")] from a zenlm NER model folder.

    Args:
        folder: A `zenlm finetune --task ner` output (model folder with task.json).
        entity: The entity type to treat as a person (CoNLL: "PER").
        batch_size: Sentences per forward pass.

    Raises:
        CheckpointError: the folder is not a NER model, or its tags have no B-/I-`entity`.
    """

    def __init__(self, folder: str | Path, entity: str = "PER", batch_size: int = 32) -> None:
        self.model, self.tokenizer, self.info = load_task_model(folder)
        if self.info.task != "ner":
            raise CheckpointError(f"--ner-model {folder}: a {self.info.task!r} model; "
                                  "give a `zenlm finetune --task ner` output")
        self.begin, self.inside = f"B-{entity}", f"I-{entity}"
        if self.begin not in self.info.labels:
            raise CheckpointError(f"--ner-model {folder}: no {self.begin!r} tag in its labels "
                                  f"{self.info.labels}")
        self.pad = pad_id(self.tokenizer, backbone_of(self.model).config)
        self.batch_size = batch_size

    def __call__(self, text: str) -> list[Span]:
        """Person spans of `text`, in order."""
        sentences = _sentences(text)
        if not sentences:
            return []
        words = [[text[s:e] for s, e in sentence] for sentence in sentences]
        features = encode_words(self.tokenizer, words, max_length=self.info.max_length)
        tags = predict_tags(self.model, features, len(words), self.pad, self.batch_size)
        spans: list[Span] = []
        for sentence, row in zip(sentences, tags, strict=True):
            inside = False  # the last span is still growing
            for (start, end), tag in zip(sentence, row, strict=True):
                label = self.info.labels[tag]
                if label == self.inside and inside:
                    spans[-1] = (spans[-1][0], end, "PERSON")
                    continue
                inside = label in (self.begin, self.inside)  # a stray I- starts one too
                if inside:
                    spans.append((start, end, "PERSON"))
        return spans


def _sentences(text: str) -> list[list[tuple[int, int]]]:
    """Word offsets of `text` grouped into sentences (ended by . ! ? 。 ！ ？)."""
    out: list[list[tuple[int, int]]] = [[]]
    for match in _WORD.finditer(text):
        out[-1].append(match.span())
        if match.group(0) in _SENTENCE_END:
            out.append([])
    return [s for s in out if s]
