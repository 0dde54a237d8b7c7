"""`zenlm evaluate`'s task options: tasks may share a flag, each with its own default; a flag
of another task is refused by name."""

from __future__ import annotations

import argparse

import pytest

from zenlm.commands import evaluate as command


@pytest.fixture
def parser(monkeypatch):
    monkeypatch.setattr(command, "_OWN_OPTIONS", {})
    parser = argparse.ArgumentParser()
    for task, seed in (("a", 1), ("b", 2)):
        group = command._TaskGroup(parser.add_argument_group(task), parser, [task])
        group.add_argument("--seed", type=int, default=seed, help=f"{task}: seed")
        group.add_argument(f"--only-{task}", action="store_true", help=f"{task} only")
    return parser


def own(parser, task: str, argv: list[str]) -> dict:
    options = vars(parser.parse_args(argv))
    command._refuse_foreign_options(task, options)
    return {name: options.get(name, default)
            for name, default in command._OWN_OPTIONS[task].items()}


def test_a_shared_flag_keeps_each_tasks_default(parser):
    assert own(parser, "a", []) == {"seed": 1, "only_a": False}
    assert own(parser, "b", []) == {"seed": 2, "only_b": False}
    assert own(parser, "b", ["--seed", "9", "--only-b"]) == {"seed": 9, "only_b": True}
    assert "a: seed; b: seed" in parser.format_help()


def test_another_tasks_flag_is_refused_by_name(parser):
    with pytest.raises(ValueError, match="--only-a is an option of --task a, not of --task b"):
        own(parser, "b", ["--only-a"])


def test_a_shared_flag_must_have_one_type(parser):
    group = command._TaskGroup(parser.add_argument_group("c"), parser, ["c"])
    with pytest.raises(TypeError, match="--seed"):
        group.add_argument("--seed", type=float, default=0.5)


def test_generate_refuses_a_fine_tuned_tasks_option(tmp_path, capsys):
    from zenlm.cli import main

    data = tmp_path / "items.jsonl"
    data.write_text('{"prompt": "a", "reference": "b"}\n')
    assert main(["evaluate", "--task", "generate", "--model", "unused", "--data", str(data),
                 "--num-beams", "2"]) == 2
    assert "--num-beams is an option of --task classify" in capsys.readouterr().err
