"""JSON Lines of objects, the input of several evaluations, with errors by file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json_objects(path: Path, what: str = "a JSON object") -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) of every non-blank line of `path`.

    Args:
        path: The JSON Lines file.
        what: How an error names the object each line must hold.

    Raises:
        ValueError: a line that is not valid JSON, or not an object, named by file and line.
    """
    rows = []
    with path.open(encoding="utf-8") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error.msg} at column "
                                 f"{error.colno}): {text.strip()[:80]!r}") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{number}: expected {what}, got "
                                 f"{type(obj).__name__}")
            rows.append((number, obj))
    return rows
