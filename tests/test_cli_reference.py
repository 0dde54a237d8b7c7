"""The command line documents itself: help on every option, a reference that is never stale."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import zenlm
from zenlm.cli import build_parser
from zenlm.cli_reference import commands, options, reference

REPO = Path(__file__).resolve().parents[1]


def test_every_option_of_every_command_has_help() -> None:
    missing = [f"{name} {action.option_strings or action.dest}"
               for name, _, parser in commands(build_parser())
               for action in options(parser) if not (action.help or "").strip()]
    assert missing == []


def test_every_command_has_a_help_line() -> None:
    assert [name for name, line, _ in commands(build_parser()) if not line.strip()] == []


def test_docs_cli_md_is_the_parsers_reference() -> None:
    written = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert written == reference(), (
        "docs/cli.md is stale: run `python -m zenlm.cli_reference docs/cli.md`")


def test_reference_lists_each_command_and_flag() -> None:
    text = reference()
    for name, _, parser in commands(build_parser()):
        assert f"## `{name}`" in text
        for action in options(parser):
            assert (action.option_strings[0] if action.option_strings else action.dest) in text


def test_version_flag_prints_the_package_version() -> None:
    out = subprocess.run([sys.executable, "-m", "zenlm", "--version"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"zenlm {zenlm.__version__}"
