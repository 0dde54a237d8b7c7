"""README's commands and code work as written (a newcomer pastes them in this order)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from zenlm.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def zenlm_commands() -> list[list[str]]:
    lines = [line for block in blocks("bash") for line in block.splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith(".venv/bin/zenlm ")]


def test_readme_has_the_tour() -> None:
    verbs = {argv[0] for argv in zenlm_commands()}
    assert {"generate", "finetune", "evaluate", "serve", "predict"} <= verbs


@pytest.mark.parametrize("argv", zenlm_commands(), ids=lambda argv: " ".join(argv[:3]))
def test_every_readme_command_parses(argv: list[str]) -> None:
    """Each command's flags exist and take the values given (drift fails here)."""
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse's way of saying a flag or value is wrong
        pytest.fail(f"README command does not parse: zenlm {' '.join(argv)} ({exc})")


def test_readme_setup_commands_are_make_targets() -> None:
    makefile = (REPO / "Makefile").read_text()
    for target in re.findall(r"^make (\w+)", blocks("bash")[0], re.M):
        assert re.search(rf"^{target}:", makefile, re.M), target


def test_readme_python_runs(smollm2_gguf, capsys) -> None:
    code = blocks("python")[0]
    assert 'zenlm.load("smollm2-135m-instruct")' in code
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - our own README
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) >= 2 and all(line.strip() for line in printed[:1])
