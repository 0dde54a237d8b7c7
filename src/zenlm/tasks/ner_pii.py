"""Names as PII: a fine-tuned token classifier (`zenlm finetune --task ner`) finds PER spans.

`zenlm data prepare --ner-model FOLDER` passes a `NameDetector` to the scrubber, which then
replaces every person entity by `<PERSON>` after the pattern detectors (e-mails, phones, ...)
have had their turn. The text is split into words the way CoNLL splits it (punctuation apart),
each sentence tagged through the model's own predict path (`zenlm.load_task(folder)
.predict(words)`, as `zenlm predict --task ner`), and a B-PER word with the I-PER words after
it becomes one character span.
"""

from __future__ import annotations

import re
from pathlib import Path

from zenlm.errors import CheckpointError
from zenlm.tasks.evaluate import check_task
from zenlm.tasks.model import TaskModel

Span = tuple[int, int, str]
_WORD = re.compile(r"\w+(?:['’.-]\w+)*|[^\w\s]")
_SENTENCE_END = {".", "!", "?", "。", "！", "？"}


class NameDetector:
    """Callable text -> [(start, end, "PERSON")] from a zenlm NER model folder.

    Args:
        folder: A `zenlm finetune --task ner` output (model folder with task.json).
        entity: The entity type to treat as a person (CoNLL: "PER").

    Raises:
        CheckpointError: the folder is not a NER model, or its tags have no B-/I-`entity`.
    """

    def __init__(self, folder: str | Path, entity: str = "PER") -> None:
        self.model = TaskModel(folder)
        try:
            check_task("ner", self.model.task)
        except ValueError as exc:
            raise CheckpointError(f"--ner-model {folder}: {exc}; give a `zenlm finetune "
                                  "--task ner` output") from exc
        self.begin, self.inside = f"B-{entity}", f"I-{entity}"
        if self.begin not in self.model.labels:
            raise CheckpointError(f"--ner-model {folder}: no {self.begin!r} tag in its labels "
                                  f"{self.model.labels}")

    def __call__(self, text: str) -> list[Span]:
        """Person spans of `text`, in order."""
        sentences = _sentences(text)
        if not sentences:
            return []
        records = self.model.predict([[text[s:e] for s, e in sentence] for sentence in sentences])
        spans: list[Span] = []
        for sentence, record in zip(sentences, records, strict=True):
            inside = False  # the last span is still growing
            for (start, end), label in zip(sentence, record["tags"], strict=True):
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
