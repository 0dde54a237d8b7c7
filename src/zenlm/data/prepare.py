"""`zenlm data prepare`: read -> clean -> drop short -> scrub PII -> dedupe -> JSONL."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from zenlm.data.clean import clean_text
from zenlm.data.dedupe import ExactDeduper, MinHashDeduper
from zenlm.data.pii import Detector, scrub_pii
from zenlm.data.readers import ReadStats, TxtUnit, read_documents


@dataclass
class PrepareOptions:
    """What `prepare_corpus` does to each document."""

    field: str = "text"
    txt_unit: TxtUnit = "paragraph"
    skip_bad_lines: bool = False
    clean: bool = True
    min_chars: int = 1  # documents shorter than this after cleaning are dropped
    pii: bool = True
    pii_detectors: Sequence[Detector] = ()  # more detectors after the built-in ones (names)
    dedupe: bool = True
    near_dup_threshold: float | None = 0.8  # None: exact duplicates only


@dataclass
class PrepareReport:
    """Counts of every stage, so that a user sees what was removed and why."""

    files: int = 0
    documents_read: int = 0
    bad_lines_skipped: int = 0
    changed_by_cleaning: int = 0
    dropped_short: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    pii_replaced: dict[str, int] = field(default_factory=dict)
    documents_written: int = 0
    chars_written: int = 0

    def summary(self) -> str:
        """One line per stage."""
        return "\n".join(f"{key}: {value}" for key, value in asdict(self).items())


def clean_documents(
    docs: Iterable[str], options: PrepareOptions, report: PrepareReport
) -> Iterator[str]:
    """Apply the cleaning, PII and dedupe stages of `options` to a stream of documents."""
    exact = ExactDeduper() if options.dedupe else None
    near = (MinHashDeduper(options.near_dup_threshold)
            if options.dedupe and options.near_dup_threshold is not None else None)
    pii: Counter[str] = Counter()
    for doc in docs:
        text = clean_text(doc) if options.clean else doc
        report.changed_by_cleaning += text != doc
        if len(text) < options.min_chars:
            report.dropped_short += 1
            continue
        if options.pii:
            text = scrub_pii(text, pii, options.pii_detectors)
        if exact is not None and exact.seen(text):
            report.exact_duplicates += 1
            continue
        if near is not None and near.seen(text):
            report.near_duplicates += 1
            continue
        report.documents_written += 1
        report.chars_written += len(text)
        yield text
    report.pii_replaced = dict(sorted(pii.items()))


def prepare_corpus(
    inputs: list[str | Path], output: str | Path, options: PrepareOptions | None = None,
    *, progress: bool = True,
) -> PrepareReport:
    """Write the cleaned documents of `inputs` to `output` as JSONL {"text": ...}.

    A report (the counts) is written beside it as `<output>.report.json`.

    Raises:
        ValueError: malformed input, or no document left (an empty corpus).
    """
    options = options or PrepareOptions()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    stats, report = ReadStats(), PrepareReport()
    docs = read_documents(inputs, field=options.field, txt_unit=options.txt_unit,
                          skip_bad_lines=options.skip_bad_lines, stats=stats)
    partial = output.with_name(output.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        bar = tqdm(clean_documents(docs, options, report), unit=" docs", disable=not progress,
                   desc="prepare")
        for text in bar:
            handle.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    report.files, report.documents_read = stats.files, stats.documents
    report.bad_lines_skipped = stats.bad_lines
    if report.documents_written == 0:
        partial.unlink()
        raise ValueError(f"empty corpus: no document left from {[str(p) for p in inputs]} "
                         f"({report.documents_read} read)")
    partial.replace(output)
    output.with_name(output.name + ".report.json").write_text(
        json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    return report
