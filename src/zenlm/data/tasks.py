"""Readers of labelled task data: classification tables, CoNLL BIO, SQuAD JSON, chat JSONL.

Every reader checks what it reads and raises `TaskDataError` naming `file:line` and
the offending value: a label outside the label set, a broken BIO sequence, an answer
that is not in its context, an empty file. Nothing is silently dropped.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zenlm.errors import ZenlmError


class TaskDataError(ZenlmError, ValueError):
    """A task data file is malformed; the message starts with `file:line:`."""


@dataclass
class TextExample:
    """One row of a classification file."""

    text: str
    label: str | None
    line: int


@dataclass
class TaggedSentence:
    """One sentence of a CoNLL file: words and their BIO tags."""

    tokens: list[str]
    tags: list[str]
    line: int  # line of the first word


@dataclass
class QAExample:
    """One SQuAD question: the passage, the question and its answers (text, char start)."""

    id: str
    question: str
    context: str
    answers: list[tuple[str, int]]
    title: str = ""


@dataclass
class ChatExample:
    """One conversation: messages with role and content."""

    messages: list[dict[str, str]]
    line: int
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------- helpers
def _read_text(path: str | Path) -> tuple[Path, str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8-sig")
    if not text.strip():
        raise TaskDataError(f"{path}:1: empty file (no examples)")
    return path, text


def _check_label(path: Path, line: int, label: str, labels: Sequence[str] | None) -> None:
    if labels is not None and label not in labels:
        raise TaskDataError(
            f"{path}:{line}: label {label!r} is not in the label set {list(labels)}"
        )


# -------------------------------------------------------------- classification
def read_classification(
    path: str | Path,
    *,
    text_column: str | None = None,
    label_column: str = "label",
    labels: Sequence[str] | None = None,
    require_labels: bool = True,
) -> list[TextExample]:
    """Read a .tsv (no quoting, as GLUE) or .csv (RFC 4180 quoting) file with a header.

    Args:
        path: The file.
        text_column: Column holding the text (default: the one column that is not the label).
        label_column: Column holding the label.
        labels: The allowed labels; a row with another label is an error.
        require_labels: Raise if the label column is missing (False: read texts to predict).

    Raises:
        TaskDataError: empty file, unknown columns, wrong field counts, empty texts, bad labels.
    """
    path, text = _read_text(path)
    rows = _table_rows(path, text)
    header, body = rows[0][1], rows[1:]
    if not body:
        raise TaskDataError(f"{path}:2: no rows after the header {header}")
    has_label = label_column in header
    if require_labels and not has_label:
        raise TaskDataError(f"{path}:1: no {label_column!r} column; columns are {header}")
    text_column = text_column or _only_text_column(path, header, label_column)
    if text_column not in header:
        raise TaskDataError(f"{path}:1: no {text_column!r} column; columns are {header}")
    t_index = header.index(text_column)
    l_index = header.index(label_column) if has_label else None
    examples = []
    for line, fields in body:
        if len(fields) != len(header):
            raise TaskDataError(
                f"{path}:{line}: {len(fields)} fields, the header has {len(header)} ({header})"
            )
        if not fields[t_index].strip():
            raise TaskDataError(f"{path}:{line}: empty text in column {text_column!r}")
        label = fields[l_index].strip() if l_index is not None else None
        if label is not None:
            _check_label(path, line, label, labels)
        examples.append(TextExample(fields[t_index], label, line))
    return examples


def _table_rows(path: Path, text: str) -> list[tuple[int, list[str]]]:
    """(first line number, fields) of every non-blank record."""
    if path.suffix.lower() == ".tsv":
        return [(n, row.split("\t")) for n, row in enumerate(text.splitlines(), 1) if row.strip()]
    reader = csv.reader(text.splitlines(keepends=True))
    rows, line = [], 1
    try:
        for fields in reader:
            if fields:
                rows.append((line, fields))
            line = reader.line_num + 1
    except csv.Error as exc:
        raise TaskDataError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from exc
    return rows


def _only_text_column(path: Path, header: list[str], label_column: str) -> str:
    others = [c for c in header if c != label_column]
    if len(others) != 1:
        raise TaskDataError(
            f"{path}:1: cannot tell the text column among {others}; pass text_column"
        )
    return others[0]


# ------------------------------------------------------------------ CoNLL BIO
_TAG = re.compile(r"^(O|[BI]-\S+)$")


def read_conll(
    path: str | Path, *, tag_column: int = -1, labels: Sequence[str] | None = None,
    require_tags: bool = True,
) -> list[TaggedSentence]:
    """Read CoNLL-2003 style files: `token ... TAG` per line, blank lines between sentences.

    `-DOCSTART-` lines are document markers, not words. Tags must be IOB2 (BIO): `O`,
    `B-X`, or `I-X` right after `B-X`/`I-X` of the same type. With `require_tags=False`
    (texts to predict) a line may hold the token alone; its tag reads as `O`.

    Raises:
        TaskDataError: empty file, a line without a tag, a malformed tag, a broken BIO
            sequence, or a tag outside `labels`.
    """
    path, text = _read_text(path)
    sentences: list[TaggedSentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    for line, raw in enumerate(text.splitlines(), 1):
        fields = raw.split()
        if not fields or fields[0] == "-DOCSTART-":
            if tokens:
                sentences.append(TaggedSentence(tokens, tags, start))
            tokens, tags = [], []
            continue
        if len(fields) < 2 and require_tags:
            raise TaskDataError(f"{path}:{line}: expected 'token ... TAG', got {raw!r}")
        tag = fields[tag_column] if len(fields) >= 2 else "O"
        _check_bio(path, line, tag, tags[-1] if tags else "O")
        _check_label(path, line, tag, labels)
        if not tokens:
            start = line
        tokens.append(fields[0])
        tags.append(tag)
    if tokens:
        sentences.append(TaggedSentence(tokens, tags, start))
    if not sentences:
        raise TaskDataError(f"{path}:1: no sentences (only document markers or blank lines)")
    return sentences


def _check_bio(path: Path, line: int, tag: str, previous: str) -> None:
    if not _TAG.match(tag):
        raise TaskDataError(f"{path}:{line}: tag {tag!r} is not O, B-TYPE or I-TYPE")
    if tag.startswith("I-") and previous[2:] != tag[2:]:
        raise TaskDataError(
            f"{path}:{line}: broken BIO sequence: {tag!r} follows {previous!r} "
            f"(an I- tag must continue a B-/I- tag of the same type)"
        )


# --------------------------------------------------------------------- SQuAD
def read_squad(path: str | Path, *, require_answers: bool = True) -> list[QAExample]:
    """Read SQuAD v1.1 JSON: `{"data": [{"title", "paragraphs": [{"context", "qas"}]}]}`.

    With `require_answers=False` (questions to predict) `answers` may be absent or empty.

    Raises:
        TaskDataError: empty or invalid JSON, a missing key, a question without answers,
            or an answer whose text is not at its `answer_start` in the context (line =
            where its question id is).
    """
    path, text = _read_text(path)
    try:
        data = json.loads(text)["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise TaskDataError(f"{path}:1: not SQuAD JSON with a 'data' list ({exc})") from exc
    examples = []
    for a_index, article in enumerate(data):
        for p_index, paragraph in enumerate(article.get("paragraphs", [])):
            for q_index, qa in enumerate(paragraph.get("qas", [])):
                where = f"data[{a_index}].paragraphs[{p_index}].qas[{q_index}]"
                example = _qa_example(path, text, article, paragraph, qa, where)
                if require_answers and not example.answers:
                    raise TaskDataError(f"{path}:{_line_of(text, example.id)}: {where} "
                                        f"(id {example.id}): no answers")
                examples.append(example)
    if not examples:
        raise TaskDataError(f"{path}:1: no questions in 'data'")
    return examples


def _qa_example(
    path: Path, raw: str, article: dict, paragraph: dict, qa: dict, where: str
) -> QAExample:
    qid = str(qa.get("id", where))
    try:
        context, question = paragraph["context"], qa["question"]
        answers = [(a["text"], int(a["answer_start"])) for a in qa.get("answers", [])]
    except (KeyError, TypeError, ValueError) as exc:
        line = _line_of(raw, qid)
        raise TaskDataError(f"{path}:{line}: {where} (id {qid}): missing key {exc}") from exc
    for answer, start in answers:
        if context[start:start + len(answer)] != answer:
            found = context.find(answer)
            hint = f"; it occurs at {found}" if found >= 0 else "; it is not in the context"
            raise TaskDataError(
                f"{path}:{_line_of(raw, qid)}: {where} (id {qid}): answer {answer!r} is not at "
                f"answer_start {start} of its context{hint}"
            )
    return QAExample(qid, question, context, answers, article.get("title", ""))


def _line_of(raw: str, qid: str) -> int:
    """Line of the file where question `qid` is written (1 when it cannot be found)."""
    return raw.count("\n", 0, max(raw.find(json.dumps(qid)), 0)) + 1


# ---------------------------------------------------------------------- chat
ROLES = ("system", "user", "assistant")


def read_chat(path: str | Path) -> list[ChatExample]:
    """Read chat JSONL: per line `{"instruction", "input", "output"}` or `{"messages": [...]}`.

    An instruction record becomes a user turn (instruction, then the input after a blank
    line when there is one) and an assistant turn (output).

    Raises:
        TaskDataError: empty file, invalid JSON, unknown keys/roles, no assistant turn.
    """
    path, text = _read_text(path)
    examples = []
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise TaskDataError(f"{path}:{line}: invalid JSON ({exc.msg})") from exc
        examples.append(ChatExample(_messages(path, line, record), line))
    return examples


def _messages(path: Path, line: int, record: Any) -> list[dict[str, str]]:
    if isinstance(record, dict) and "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
            for m in messages
        ):
            raise TaskDataError(
                f"{path}:{line}: 'messages' must be a list of {{role, content}} with role in "
                f"{ROLES}"
            )
    elif isinstance(record, dict) and {"instruction", "output"} <= set(record):
        prompt = record["instruction"]
        if record.get("input"):
            prompt = f"{prompt}\n\n{record['input']}"
        messages = [{"role": "user", "content": prompt},
                    {"role": "assistant", "content": record["output"]}]
    else:
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise TaskDataError(
            f"{path}:{line}: expected keys instruction/input/output or messages, got {keys}"
        )
    if not any(m["role"] == "assistant" for m in messages):
        raise TaskDataError(f"{path}:{line}: no assistant turn to learn from")
    return messages
