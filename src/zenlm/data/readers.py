"""Stream documents out of text corpora: .txt, .jsonl, .csv/.tsv, .parquet, and folders.

Every reader is a generator, so a corpus larger than RAM is read one document at a
time. Errors name the file and line; `skip_bad_lines=True` skips malformed records
instead and counts them in `ReadStats`.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

TEXT_SUFFIXES = (".txt", ".md", ".text")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
TABLE_SUFFIXES = (".csv", ".tsv")
PARQUET_SUFFIXES = (".parquet",)
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + JSONL_SUFFIXES + TABLE_SUFFIXES + PARQUET_SUFFIXES

#: How a .txt file is cut into documents: whole file, blank-line paragraphs, or lines.
TxtUnit = Literal["file", "paragraph", "line"]


@dataclass
class ReadStats:
    """What the readers saw: files opened, documents yielded, malformed records skipped."""

    files: int = 0
    documents: int = 0
    bad_lines: int = 0


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files named by `paths`, folders expanded recursively (sorted, supported suffixes only).

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: a file has an unsupported suffix, or nothing was found at all.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix.lower()
                                in SUPPORTED_SUFFIXES and p.is_file()))
        elif path.is_file():
            if path.suffix.lower() not in SUPPORTED_SUFFIXES:
                raise ValueError(
                    f"{path}: unsupported file type {path.suffix!r}; "
                    f"supported: {', '.join(SUPPORTED_SUFFIXES)}"
                )
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    if not files:
        raise ValueError(f"no corpus files found in {[str(p) for p in paths]}")
    return files


def read_documents(
    paths: Iterable[str | Path],
    *,
    field: str = "text",
    txt_unit: TxtUnit = "paragraph",
    skip_bad_lines: bool = False,
    stats: ReadStats | None = None,
) -> Iterator[str]:
    """Yield the documents of every file, in order.

    Args:
        paths: Files or folders.
        field: JSON key / CSV column / parquet column holding the text.
        txt_unit: How .txt files are cut into documents.
        skip_bad_lines: Skip (and count) malformed JSONL lines or rows lacking `field`
            instead of raising.
        stats: Filled in as the documents are read.

    Raises:
        ValueError: a malformed record ("file:line: ..."), when not skipping.
    """
    stats = stats if stats is not None else ReadStats()
    for path in expand_paths(paths):
        stats.files += 1
        for doc in _read_file(path, field, txt_unit, skip_bad_lines, stats):
            stats.documents += 1
            yield doc


def _read_file(
    path: Path, field: str, txt_unit: TxtUnit, skip: bool, stats: ReadStats
) -> Iterator[str]:
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return _read_txt(path, txt_unit)
    if suffix in JSONL_SUFFIXES:
        return _read_jsonl(path, field, skip, stats)
    if suffix in TABLE_SUFFIXES:
        return _read_table(path, field, skip, stats)
    return _read_parquet(path, field)


def _read_txt(path: Path, unit: TxtUnit) -> Iterator[str]:
    # newline="" would keep \r\n; universal newlines turn Windows files into \n text.
    with path.open(encoding="utf-8", errors="replace") as handle:
        if unit == "file":
            yield handle.read()
            return
        if unit == "line":
            yield from (line.rstrip("\n") for line in handle if line.strip())
            return
        paragraph: list[str] = []
        for line in handle:
            if line.strip():
                paragraph.append(line)
            elif paragraph:
                yield "".join(paragraph).rstrip("\n")
                paragraph = []
        if paragraph:
            yield "".join(paragraph).rstrip("\n")


def _bad(path: Path, line: int, why: str, skip: bool, stats: ReadStats) -> None:
    if not skip:
        raise ValueError(f"{path}:{line}: {why}; pass --skip-bad-lines to skip such records")
    stats.bad_lines += 1


def _read_jsonl(path: Path, field: str, skip: bool, stats: ReadStats) -> Iterator[str]:
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                _bad(path, number, f"malformed JSON ({exc.msg} at column {exc.colno})",
                     skip, stats)
                continue
            if not isinstance(record, dict) or not isinstance(record.get(field), str):
                keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                _bad(path, number, f"no string field {field!r} (found {keys})", skip, stats)
                continue
            yield record[field]


def _read_table(path: Path, field: str, skip: bool, stats: ReadStats) -> Iterator[str]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long documents in one cell
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        if reader.fieldnames is None or field not in reader.fieldnames:
            raise ValueError(f"{path}: no column {field!r}; columns: {reader.fieldnames}")
        for row in reader:
            if row.get(field) is None:
                _bad(path, reader.line_num, f"row has no value for {field!r}", skip, stats)
                continue
            yield row[field]


def _read_parquet(path: Path, field: str) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # optional: only parquet corpora need it
        raise ValueError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from exc
    handle = pq.ParquetFile(path)
    if field not in handle.schema_arrow.names:
        raise ValueError(f"{path}: no column {field!r}; columns: {handle.schema_arrow.names}")
    for batch in handle.iter_batches(columns=[field], batch_size=1024):
        yield from (text for text in batch.column(0).to_pylist() if text is not None)
