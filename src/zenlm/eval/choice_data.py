r"""Multiple-choice items: reading PIQA's files and generic JSONL, prompts and few-shot examples.

Two formats, told apart line by line by their keys:

- PIQA's own: `{"goal": ..., "sol1": ..., "sol2": ...}`, the label (0 or 1) either in the
  line (`"label"`) or on the same line of a separate labels file (`piqa_dev-labels.lst`).
- Generic: `{"context": ..., "choices": [...], "label": i}`.

Prompts follow lm-evaluation-harness: the context is the template filled with the item's
fields, each choice is scored as `target_delimiter + choice` (" " by default), and a
few-shot prompt is `example + delimiter + its gold choice + "\n\n"` per example, then the
item's own context. Examples come from the same file, never the item itself, drawn as
lm-eval's default sampler draws them (one `random.Random(seed)` over the items in order).
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zenlm.eval.jsonl import read_json_objects

PIQA_TEMPLATE = "Question: {goal}\nAnswer:"  # lm_eval/tasks/piqa/piqa.yaml's doc_to_text
GENERIC_TEMPLATE = "{context}"
TARGET_DELIMITER = " "  # lm-eval's default target_delimiter
FEWSHOT_DELIMITER = "\n\n"  # lm-eval's default fewshot_delimiter
PIQA_KEYS = ("goal", "sol1", "sol2")
GENERIC_KEYS = ("context", "choices")


@dataclass(frozen=True)
class Item:
    """One question.

    Attributes:
        fields: The line's JSON object (what the template reads), label included.
        choices: The answers, as scored.
        label: Index of the correct choice.
        line: 1-based line number in the data file.
        format: "piqa" or "generic".
    """

    fields: dict[str, Any]
    choices: tuple[str, ...]
    label: int
    line: int
    format: str


def read_items(path: str | Path, labels: str | Path | None = None) -> list[Item]:
    """Every item of a JSONL file, checked; labels from the lines or from `labels`.

    Raises:
        ValueError: naming the file and line: malformed JSON, unknown keys, an empty
            choice, a missing label, a label outside the choices, or a labels file whose
            length differs from the data's.
    """
    path = Path(path)
    rows = read_json_objects(path)
    if not rows:
        raise ValueError(f"{path}: no items (an empty file)")
    outside = _read_labels(Path(labels), len(rows), path) if labels is not None else None
    items = []
    for index, (line, obj) in enumerate(rows):
        label = obj.get("label") if outside is None else outside[index]
        items.append(_item(obj, label, f"{path}:{line}", line))
    return items


def _read_labels(path: Path, expected: int, data: Path) -> list[int]:
    """The integer labels of a labels file, one per line (PIQA's `*-labels.lst`)."""
    lines = [(n, t.strip()) for n, t in enumerate(path.read_text(encoding="utf-8")
                                                   .splitlines(), start=1) if t.strip()]
    if len(lines) != expected:
        raise ValueError(f"{path}: {len(lines)} labels for the {expected} items of {data}; "
                         "a labels file has one label per item, in the same order")
    labels = []
    for number, text in lines:
        if not text.lstrip("-").isdigit():
            raise ValueError(f"{path}:{number}: label {text!r} is not an integer")
        labels.append(int(text))
    return labels


def _item(obj: dict[str, Any], label: Any, where: str, line: int) -> Item:
    if all(key in obj for key in PIQA_KEYS):
        choices, form = [obj["sol1"], obj["sol2"]], "piqa"
    elif all(key in obj for key in GENERIC_KEYS):
        choices, form = obj["choices"], "generic"
        if not isinstance(choices, list) or len(choices) < 2:
            raise ValueError(f"{where}: 'choices' must be a list of at least two strings, "
                             f"got {choices!r}")
    else:
        raise ValueError(f"{where}: expected PIQA's keys {list(PIQA_KEYS)} or the generic "
                         f"{list(GENERIC_KEYS)} + 'label', got {sorted(obj)}")
    for j, choice in enumerate(choices):
        if not isinstance(choice, str) or not choice.strip():
            raise ValueError(f"{where}: choice {j} is empty ({choice!r}); every choice needs "
                             "text to score")
    if label is None:
        raise ValueError(f"{where}: no 'label' in the line; give one, or a labels file "
                         "(--labels) with one label per line")
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(choices):
        raise ValueError(f"{where}: label {label!r} is outside the choices: valid labels are "
                         f"0..{len(choices) - 1}")
    return Item({**obj, "label": label}, tuple(choices), label, line, form)


def default_template(items: list[Item]) -> str:
    """PIQA's lm-eval prompt for PIQA items, else the generic `{context}`."""
    return PIQA_TEMPLATE if items[0].format == "piqa" else GENERIC_TEMPLATE


def unescape(template: str) -> str:
    r"""A template typed in a shell: the two-character `\n` and `\t` become a newline, a tab."""
    return template.replace("\\n", "\n").replace("\\t", "\t")


def check_template(template: str, items: list[Item]) -> None:
    """Raise ValueError naming a `{field}` of the template that an item lacks."""
    names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    for item in items:
        missing = sorted(names - set(item.fields))
        if missing:
            raise ValueError(f"template field(s) {missing} are not in the item at line "
                             f"{item.line}; its fields are {sorted(item.fields)}")


def contexts(items: list[Item], template: str, shots: int = 0, seed: int = 1234,
             target_delimiter: str = TARGET_DELIMITER,
             fewshot_delimiter: str = FEWSHOT_DELIMITER) -> list[str]:
    """Each item's prompt: `shots` solved examples from the other items, then its own.

    Examples are drawn like lm-eval's ContextSampler with the eval item excluded: one
    `random.Random(seed)`, for each item in order n + 1 items are sampled, equal copies
    of the item dropped, the first n kept.
    """
    if shots < 0:
        raise ValueError(f"--shots must be >= 0, got {shots}")
    if shots >= len(items):
        raise ValueError(f"--shots {shots} needs more than {shots} items; the file has "
                         f"{len(items)}")
    check_template(template, items)
    rng = random.Random(seed)
    out = []
    for item in items:
        prefix = ""
        if shots:
            examples = _draw(rng, items, item, shots)
            prefix = "".join(template.format(**ex.fields) + target_delimiter
                             + ex.choices[ex.label] + fewshot_delimiter for ex in examples)
        out.append(prefix + template.format(**item.fields))
    return out


def _draw(rng: random.Random, items: list[Item], item: Item, n: int) -> list[Item]:
    """lm-eval's ContextSampler.sample(n, eval_doc=item), on Items compared by their fields."""
    drawn = [x for x in rng.sample(items, n + 1) if x.fields != item.fields][:n]
    if len(drawn) < n:  # duplicates of the item were drawn: lm-eval resamples without them
        drawn = rng.sample([x for x in items if x.fields != item.fields], n)
    return drawn
