"""What every `zenlm evaluate` run produces: numbers, settings, tables and plots.

A `Report` is written three ways: `report.json` (the numbers and the settings that
produced them, for programs), `report.md` (tables a person reads at a glance) and one
PNG per figure. `--json` prints the same object as `report.json`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Table:
    """A Markdown table: a title, column names, rows of cells and an optional note.

    The note (what the numbers are, how they were computed) is printed under the title.
    """

    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    note: str = ""

    def markdown(self) -> str:
        """The table as GitHub-flavoured Markdown, floats to 4 decimals."""
        lines = [f"## {self.title}", ""] + ([self.note, ""] if self.note else [])
        lines += ["| " + " | ".join(map(_cell, self.columns)) + " |",
                  "| " + " | ".join("---" for _ in self.columns) + " |"]
        lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass
class Figure:
    """A plot drawn on demand (so matplotlib is imported only when a report is written).

    Attributes:
        name: File stem of the PNG (`<name>.png` in the report folder).
        title: Caption in the Markdown report.
        draw: Draws on the given matplotlib Axes.
        size: Width and height in inches.
    """

    name: str
    title: str
    draw: Callable[[Any], None]
    size: tuple[float, float] = (6.4, 4.8)


@dataclass
class Report:
    """One evaluation's result.

    Attributes:
        task: The `--task` that produced it.
        metrics: The numbers (JSON-able), printed by `--json` at the top level.
        settings: What produced them: model, data, options, counts.
        tables: Extra tables for the Markdown report (per class, per category, ...).
        figures: Plots written as PNG files.
    """

    task: str
    metrics: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The metrics at the top level, with `task` and `settings` beside them."""
        return {"task": self.task, **self.metrics, "settings": self.settings}

    def markdown(self) -> str:
        """A one-page Markdown report: settings, headline numbers, tables, figure links."""
        lines = [f"# {self.task} evaluation", ""]
        lines += [f"- {key}: `{value}`" for key, value in self.settings.items()
                  if not isinstance(value, (dict, list))]
        headline = [(k, v) for k, v in self.metrics.items() if _is_number(v)]
        if headline:
            lines += ["", Table("Metrics", ["metric", "value"], headline).markdown()]
        lines += ["\n" + table.markdown() for table in self.tables]
        lines += [f"\n![{figure.title}]({figure.name}.png)" for figure in self.figures]
        return "\n".join(lines) + "\n"

    def write(self, directory: str | Path) -> list[Path]:
        """Write report.json, report.md and the PNGs into `directory` (created if needed).

        Returns:
            The paths written.
        """
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        written = [folder / "report.json", folder / "report.md"]
        written[0].write_text(json.dumps(self.to_json(), indent=2, ensure_ascii=False,
                                         default=str) + "\n", encoding="utf-8")
        written[1].write_text(self.markdown(), encoding="utf-8")
        for figure in self.figures:
            written.append(save_figure(figure, folder / f"{figure.name}.png"))
        return written


def save_figure(figure: Figure, path: Path) -> Path:
    """Draw `figure` into `path` (PNG, SVG or PDF by its suffix) and return the path."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(figsize=figure.size)
    try:
        figure.draw(axes)
        axes.set_title(figure.title)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value).replace("|", "\\|").replace("\n", " ")
