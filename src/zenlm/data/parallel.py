"""Readers of parallel text: pairs of aligned files, TSV and JSON Lines.

A translation corpus comes as two files with one sentence per line (line i of the
source is aligned with line i of the target), as one TSV file with a source and a
target column, or as JSON Lines with two fields. Every reader checks alignment and
names `file:line` on error; pairs with an empty side carry no training signal and are
skipped, and the count of skipped pairs is kept with the data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from zenlm.data.tasks import TaskDataError


@dataclass
class TextPair:
    """One aligned pair: a source text and its target (None in files to predict on)."""

    source: str
    target: str | None
    line: int  # 1-based line of the pair in its file(s)


@dataclass
class ParallelData:
    """The pairs of a corpus, and how many pairs were skipped for an empty side."""

    pairs: list[TextPair] = field(default_factory=list)
    skipped_empty: int = 0
    where: str = ""


#: JSON Lines field names read as (source, target), first match wins.
JSON_FIELDS = (("source", "target"), ("src", "tgt"), ("article", "summary"), ("text", "summary"))


def read_parallel(
    source: str | Path, target: str | Path | None = None, *, labelled: bool = True,
    fields: tuple[str, str] | None = None,
) -> ParallelData:
    """Pairs of a parallel corpus.

    Args:
        source: A source-side text file (with `target`), or one .tsv / .jsonl file.
        target: The target-side text file aligned with `source`, if two files.
        labelled: Whether targets are required (False: files to predict on, where a
            source-only text file or a missing target field is fine).
        fields: JSON Lines (source, target) field names; default: the first pair of
            `JSON_FIELDS` the first record has.

    Raises:
        FileNotFoundError: a file does not exist.
        TaskDataError: misaligned files, a malformed line (named by file:line), or no pairs.
    """
    source = Path(source)
    if target is not None:
        data = _read_two_files(source, Path(target))
    elif source.suffix.lower() == ".tsv":
        data = _read_tsv(source, labelled)
    elif source.suffix.lower() in (".jsonl", ".json"):
        data = _read_jsonl(source, labelled, fields)
    elif not labelled:
        data = _read_two_files(source, None)
    else:
        raise TaskDataError(f"{source}:1: give a .tsv or .jsonl file of pairs, or a source "
                            "file with its aligned target file (--source/--target)")
    if not data.pairs:
        raise TaskDataError(f"{data.where}:1: no sentence pairs (empty pairs skipped: "
                            f"{data.skipped_empty})")
    return data


def _lines(path: Path, *, trim: bool = True) -> list[str]:
    """The file's lines; with `trim`, without the blank lines that end it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    while trim and lines and not lines[-1].strip():
        lines.pop()
    return lines


def _read_two_files(source: Path, target: Path | None) -> ParallelData:
    sources = _lines(source)
    targets = _lines(target) if target is not None else [None] * len(sources)
    if len(sources) != len(targets) and target is not None:
        # Blank lines at the end may be pairs with an empty side: aligned if untrimmed.
        untrimmed = _lines(source, trim=False), _lines(target, trim=False)
        if len(untrimmed[0]) == len(untrimmed[1]):
            sources, targets = untrimmed
    if len(sources) != len(targets):
        shorter = source if len(sources) < len(targets) else target
        raise TaskDataError(
            f"{shorter}:{min(len(sources), len(targets)) + 1}: the files are not aligned: "
            f"{source} has {len(sources)} lines and {target} has {len(targets)}")
    data = ParallelData(where=f"{source}" + (f" + {target}" if target else ""))
    for number, (src, tgt) in enumerate(zip(sources, targets, strict=True), 1):
        _add(data, src, tgt, number, labelled=target is not None)
    return data


def _read_tsv(path: Path, labelled: bool) -> ParallelData:
    data = ParallelData(where=str(path))
    for number, line in enumerate(_lines(path), 1):
        cells = line.rstrip("\r").split("\t")
        if number == 1 and [c.strip().lower() for c in cells] in (["source", "target"],
                                                                    ["source"]):
            continue  # a header row
        if len(cells) > 2 or (labelled and len(cells) != 2 and line.strip()):
            raise TaskDataError(f"{path}:{number}: expected 2 tab-separated columns "
                                f"(source, target), got {len(cells)}")
        _add(data, cells[0], cells[1] if len(cells) == 2 else None, number, labelled=labelled)
    return data


def _read_jsonl(path: Path, labelled: bool, fields: tuple[str, str] | None) -> ParallelData:
    data = ParallelData(where=str(path))
    for number, line in enumerate(_lines(path), 1):
        if not line.strip():
            data.skipped_empty += 1
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskDataError(f"{path}:{number}: not valid JSON ({exc})") from None
        if not isinstance(record, dict):
            raise TaskDataError(f"{path}:{number}: expected a JSON object, "
                                f"got {type(record).__name__}")
        fields = fields or _fields_of(path, number, record)
        src, tgt = record.get(fields[0]), record.get(fields[1])
        for name, value in zip(fields, (src, tgt), strict=True):
            if value is not None and not isinstance(value, str):
                raise TaskDataError(f"{path}:{number}: field {name!r} must be a string, "
                                    f"got {type(value).__name__}")
        if src is None or (labelled and tgt is None):
            missing = fields[0] if src is None else fields[1]
            raise TaskDataError(f"{path}:{number}: no {missing!r} field "
                                f"(fields: {sorted(record)})")
        _add(data, src, tgt, number, labelled=labelled)
    return data


def _fields_of(path: Path, number: int, record: dict) -> tuple[str, str]:
    for pair in JSON_FIELDS:
        if pair[0] in record:
            return pair
    valid = ", ".join(f"{a}/{b}" for a, b in JSON_FIELDS)
    raise TaskDataError(f"{path}:{number}: no source field; records need one of: {valid} "
                        f"(fields: {sorted(record)})")


def _add(data: ParallelData, source: str, target: str | None, line: int, *,
         labelled: bool) -> None:
    source = source.strip()
    target = target.strip() if target is not None else None
    if not source or (labelled and not target):
        data.skipped_empty += 1
        return
    data.pairs.append(TextPair(source, target, line))
