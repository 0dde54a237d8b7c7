"""A self-contained HTML page: inline CSS, images as base64 PNG, no script, no external URL.

Every picture is also written next to the page as `<name>.png`, for documents that
embed it.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: .5em 1em; }
table { border-collapse: collapse; font-size: .9em; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.tokens span { padding: 1px 0; border-radius: 3px; white-space: pre-wrap; line-height: 1.9; }
img { max-width: 100%; }
figure { margin: 1em 0; } figcaption { font-size: .9em; color: #555; }
"""


@dataclass
class Page:
    """An explanation page under construction: sections of HTML, and the PNGs it shows."""

    title: str
    parts: list[str] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)

    def heading(self, text: str) -> None:
        """Start a section."""
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str) -> None:
        """A paragraph of plain text."""
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def note(self, text: str) -> None:
        """A highlighted remark (downsampling, caveats)."""
        self.parts.append(f'<p class="note">{html.escape(text)}</p>')

    def image(self, name: str, png: bytes, caption: str) -> None:
        """An inlined PNG with a caption, also written as `<name>.png`."""
        if name in self.images:
            raise ValueError(f"two images named {name!r} on one page")
        self.images[name] = png
        data = base64.b64encode(png).decode("ascii")
        self.parts.append(f'<figure><img alt="{html.escape(caption)}" '
                          f'src="data:image/png;base64,{data}"><figcaption>'
                          f"{html.escape(caption)}</figcaption></figure>")

    def table(self, columns: list[str], rows: list[list[Any]]) -> None:
        """A table; floats shown to 4 decimals, numbers right-aligned."""
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
        self.parts.append(f"<table><tr>{head}</tr>{body}</table>")

    def coloured_tokens(self, tokens: list[str], values: list[float | None],
                        titles: list[str], *, signed: bool = False) -> None:
        """The text, each token's background shaded by its value (hover: `titles`).

        Unsigned values shade from white to orange at the largest; signed ones red
        (positive) or blue (negative) at the largest magnitude.
        """
        top = max((abs(v) for v in values if v is not None), default=0.0) or 1.0
        spans = []
        for token, value, title in zip(tokens, values, titles, strict=True):
            alpha = 0.0 if value is None else min(abs(value) / top, 1.0)
            rgb = "46,109,164" if signed and value is not None and value < 0 else (
                "192,57,43" if signed else "240,140,0")
            spans.append(f'<span title="{html.escape(title)}" style="background: '
                         f'rgba({rgb},{alpha:.3f})">{html.escape(token)}</span>')
        self.parts.append('<p class="tokens">' + "".join(spans) + "</p>")

    def html(self) -> str:
        """The whole page."""
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head>"
                f"<body><h1>{html.escape(self.title)}</h1>\n" + "\n".join(self.parts)
                + "\n</body></html>\n")

    def write(self, folder: str | Path) -> list[Path]:
        """Write index.html and every `<name>.png` into `folder` (created); the paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        page = folder / "index.html"
        page.write_text(self.html(), encoding="utf-8")
        written = [page]
        for name, png in self.images.items():
            written.append(folder / f"{name}.png")
            written[-1].write_bytes(png)
        return written


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="num">{value:.4f}</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="num">{value}</td>'
    return f"<td>{html.escape('' if value is None else str(value))}</td>"
