"""The CLI reference (docs/cli.md), generated from the argument parsers.

`python -m zenlm.cli_reference docs/cli.md` rewrites it; a test fails when the file
and the parsers disagree, so the reference never goes stale.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

from zenlm.cli import build_parser

HEADER = """# Command-line reference

Generated from zenlm's argument parsers by `python -m zenlm.cli_reference docs/cli.md`
(a test fails when this file is stale). `zenlm COMMAND --help` prints the same.
"""


def commands(parser: argparse.ArgumentParser,
             prefix: str = "zenlm") -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help line, parser) of every command, nested ones (`data prepare`) included."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help for choice in action._choices_actions}
        for name, sub in action.choices.items():
            yield f"{prefix} {name}", helps.get(name) or "", sub
            yield from commands(sub, f"{prefix} {name}")


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The documented arguments of one parser (not -h, not nested command names)."""
    return [a for a in parser._actions
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction,
                                  argparse._VersionAction))]


def reference() -> str:
    """docs/cli.md's text."""
    parts = [HEADER]
    for name, help_line, parser in commands(build_parser()):
        parts += [f"## `{name}`", "", help_line[:1].upper() + help_line[1:] + ".", ""]
        rows = options(parser)
        if rows:
            parts += ["| argument | default | what it does |", "| --- | --- | --- |"]
            parts += [_row(action) for action in rows]
            parts.append("")
    return "\n".join(parts)


def _row(action: argparse.Action) -> str:
    flag = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}`"
    if action.choices and not isinstance(action.choices, dict):
        flag += " {" + ", ".join(str(c) for c in action.choices) + "}"
    positional_required = not action.option_strings and action.nargs not in ("?", "*")
    if action.required or positional_required:
        default = "required"
    elif action.default is None or action.default is False or action.default == argparse.SUPPRESS:
        default = ""
    else:
        default = f"`{action.default}`"
    text = (action.help or "").replace("|", "\\|").replace("\n", " ")
    return f"| {flag} | {default} | {text} |"


if __name__ == "__main__":
    if len(sys.argv) > 2 or (len(sys.argv) == 2 and sys.argv[1].startswith("-")):
        raise SystemExit("usage: python -m zenlm.cli_reference [docs/cli.md]")
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    text = reference()
    if target is None:
        print(text)
    else:
        target.write_text(text, encoding="utf-8")
