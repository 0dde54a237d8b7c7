"""Reports: the JSON, Markdown and PNG files every `zenlm evaluate --report` run writes."""

from __future__ import annotations

import json
from pathlib import Path

from zenlm.eval.report import Figure, Report, Table


def test_report_writes_json_markdown_and_png(tmp_path: Path) -> None:
    report = Report(
        "demo", {"acc": 0.5, "n": 4, "per_class": {"a": 1}}, {"model": "m", "data": "d"},
        tables=[Table("Per class", ["label", "f1"], [["a|b", 0.25], ["c", float("nan")]])],
        figures=[Figure("bars", "Bars", lambda axes: axes.bar(["x", "y"], [1, 2]))],
    )
    paths = report.write(tmp_path / "out")
    assert [p.name for p in paths] == ["report.json", "report.md", "bars.png"]
    saved = json.loads(paths[0].read_text())
    assert saved == {"task": "demo", "acc": 0.5, "n": 4, "per_class": {"a": 1},
                     "settings": {"model": "m", "data": "d"}}
    text = paths[1].read_text()
    assert "| acc | 0.5000 |" in text and "| n | 4 |" in text
    assert "| a\\|b | 0.2500 |" in text and "| c | nan |" in text
    assert "![Bars](bars.png)" in text
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
