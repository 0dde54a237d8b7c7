"""Per-task defaults of `zenlm finetune`, its progress and summary lines, and metric names.

The oracle for the defaults is each task's `defaults` table read directly; for the
metric names, `zenlm evaluate --json` on the same validation file.
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest

from zenlm.cli import build_parser, main
from zenlm.tasks.defaults import GENERIC, check_defaults, default_help, resolve
from zenlm.tasks.registry import get_task, task_names
from zenlm.tasks.runner import summary_line

FAKE = SimpleNamespace(name="fake", defaults={"lr": 1e-3, "freeze_embeddings": True})


def test_task_default_fills_what_the_user_did_not_give():
    values, from_task = resolve({"lr": None, "freeze_embeddings": None}, FAKE)
    assert values["lr"] == 1e-3 and values["freeze_embeddings"] is True
    assert values["epochs"] == GENERIC["epochs"]  # not the task's: the generic default
    assert sorted(from_task) == ["freeze_embeddings", "lr"]


def test_a_given_value_wins_even_when_it_equals_the_generic_or_is_false():
    values, from_task = resolve({"lr": 5e-5, "freeze_embeddings": False, "epochs": 3.0}, FAKE)
    assert (values["lr"], values["freeze_embeddings"], values["epochs"]) == (5e-5, False, 3.0)
    assert from_task == []


def test_a_default_for_an_unknown_setting_or_of_the_wrong_type_is_refused():
    with pytest.raises(ValueError, match=r"'pooling', which is not a per-task setting; valid: lr"):
        check_defaults("fake", {"pooling": "mean"})
    with pytest.raises(ValueError, match=r"epochs=2 should be a float like 1.0"):
        check_defaults("fake", {"epochs": 2})


def _help_of(flag: str) -> str:
    """The help text of one `zenlm finetune` flag."""
    commands = next(a for a in build_parser()._actions if hasattr(a, "choices")
                    and isinstance(a.choices, dict) and "finetune" in a.choices)
    return next(a.help for a in commands.choices["finetune"]._actions if flag in a.option_strings)


@pytest.mark.parametrize("name", list(GENERIC))
def test_help_lists_each_tasks_default_and_the_others(name):
    text = _help_of("--" + name.replace("_", "-"))
    specs = [get_task(t) for t in task_names()]
    assert text.endswith(f"({default_help(name, specs)})")
    if all(s.defaults.get(name, GENERIC[name]) == GENERIC[name] for s in specs):
        return
    shown = text[text.rindex("(default: ") + len("(default: "):-1].split(", ")
    mine = [s for s in specs if name in s.defaults]
    assert [entry.split(" ")[0] for entry in shown] == [s.name for s in mine] + ["others"]
    for spec, entry in zip(mine, shown, strict=False):
        value = spec.defaults[name]
        written = {True: "on", False: "off"}.get(value) if isinstance(value, bool) else None
        assert written == entry.split(" ")[1] if written else float(entry.split(" ")[1]) == value


def test_the_lr_help_reads_as_the_issue_asks():
    assert "default: classify 1e-4, ner 2e-4, qa 2e-4, others 5e-5" in _help_of("--lr")


def test_summary_line():
    assert (summary_line("classify", "accuracy", 0.91234, 700, 758, 17.24)
            == "classify: accuracy 0.912 at step 700 of 758 (17.2 min)")


def _tsv(path, n: int, offset: int = 0):
    rows = ["sentence\tlabel"] + [f"a {'good' if i % 5 < 2 else 'bad'} film number {i}\t"
                                  f"{int(i % 5 < 2)}" for i in range(offset, offset + n)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _conll(path, n: int):
    lines = []
    for i in range(n):
        words, tags = [["Mary", "Li"][i % 2], "lives", "in", ["Paris", "Oslo"][i % 2]], \
            ["B-PER", "O", "O", "B-LOC"]
        lines += [f"{w} NN O {t}" for w, t in zip(words, tags, strict=True)] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _squad(path, n: int):
    paragraphs = []
    for i in range(n):
        city = ["Paris", "Oslo", "Lima"][i % 3]
        context = f"In story {i}, Mary travelled by train to {city} for the winter."
        paragraphs.append({"context": context, "qas": [{
            "id": f"q{i}", "question": "Where did Mary travel to?",
            "answers": [{"text": city, "answer_start": context.index(city)}]}]})
    path.write_text(json.dumps({"data": [{"title": "a", "paragraphs": paragraphs}]}))
    return path


DATA = {"classify": lambda p: _tsv(p / "data.tsv", 24), "ner": lambda p: _conll(p / "d.conll", 12),
        "qa": lambda p: _squad(p / "d.json", 8)}


@pytest.mark.parametrize("task", ["classify", "ner", "qa"])
def test_defaults_progress_summary_and_metric_names_match_evaluate(task, minilm_folder,
                                                                   tmp_path, capsys):
    """No --lr: the task's own is used and recorded; --batch-size given: it wins."""
    data = DATA[task](tmp_path)
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["finetune", "--task", task, "--model", str(minilm_folder), "--train", str(data),
                 "--val", str(data), "--output", str(out), "--max-steps", "4",
                 "--eval-every", "2", "--batch-size", "4", "--max-length", "48",
                 *(["--stride", "8"] if task == "qa" else [])]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    spec = get_task(task)
    settings = summary["settings"]
    assert settings["lr"] == spec.defaults["lr"] and "lr" in summary["from_task_defaults"]
    assert settings["batch_size"] == 4 and "batch_size" not in summary["from_task_defaults"]
    assert sorted(summary["from_task_defaults"]) == sorted(
        set(spec.defaults) - {"batch_size", "eval_every", "max_length", "stride"})
    task_json = json.loads((out / "model" / "task.json").read_text())
    assert task_json["training"] == {"settings": settings,
                                     "from_task_defaults": summary["from_task_defaults"]}
    # one progress line per evaluation, with the metric the run selects on
    progress = re.findall(rf"{task}: step (\d+), validation {spec.headline} ([-\d.]+) "
                          r"\(\d+\.\d min\)\n", captured.err)
    assert [int(s) for s, _ in progress] == [s for s, _ in summary["history"]] == [2, 4]
    assert [float(v) for _, v in progress] == pytest.approx(
        [v for _, v in summary["history"]], abs=1e-4)
    last = captured.err.strip().splitlines()[-1]
    assert last == summary["line"]
    assert last.startswith(f"{task}: {spec.headline} ")
    assert f"at step {summary['best_step']} of {summary['steps']} (" in last
    # `zenlm evaluate` on the same file: every scalar metric of the validation, same value
    assert main(["evaluate", "--task", task, "--model", str(out / "model"), "--data",
                 str(data), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    names = [k for k, v in summary["validation"].items() if isinstance(v, (int, float))]
    assert spec.headline in names
    assert {k: evaluated[k] for k in names} == pytest.approx(
        {k: summary["validation"][k] for k in names})
    assert main(["evaluate", "--task", task, "--model", str(out / "model"), "--data",
                 str(data)]) == 0
    markdown = capsys.readouterr().out
    assert all(f"| {name} |" in markdown for name in names)


def test_qa_span_options_are_recorded_and_refused_for_other_tasks(minilm_folder, tmp_path,
                                                                   capsys):
    data = _squad(tmp_path / "d.json", 6)
    assert main(["finetune", "--task", "qa", "--model", str(minilm_folder), "--train", str(data),
                 "--val", str(data), "--output", str(tmp_path / "run"), "--max-steps", "1",
                 "--max-answer-length", "3", "--max-length", "48", "--stride", "8"]) == 0
    info = json.loads((tmp_path / "run" / "model" / "task.json").read_text())
    assert info["options"] == {"n_best": get_task("qa").defaults["n_best"],
                               "max_answer_length": 3}
    classify = tmp_path / "c"
    assert main(["finetune", "--task", "classify", "--model", str(minilm_folder), "--train",
                 str(_tsv(tmp_path / "c.tsv", 12)), "--output", str(classify),
                 "--max-steps", "1"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--task", "classify", "--model", str(classify / "model"),
                 "--data", str(tmp_path / "c.tsv"), "--n-best", "5"]) == 2
    assert "--n-best applies to --task qa, not classify" in capsys.readouterr().err


def test_a_stride_too_long_for_the_window_names_the_flags(minilm_folder, tmp_path, capsys):
    data = _squad(tmp_path / "d.json", 4)
    assert main(["finetune", "--task", "qa", "--model", str(minilm_folder), "--train", str(data),
                 "--val", str(data), "--output", str(tmp_path / "run"), "--max-steps", "1",
                 "--max-length", "48"]) == 2
    err = capsys.readouterr().err
    assert "--stride 96 is not below the room left" in err and "--max-length 48" in err


def test_resolving_keeps_the_time_budget_and_other_options():
    from zenlm.tasks.runner import FinetuneOptions, resolve_options

    opts, from_task = resolve_options(FinetuneOptions(task="ner", model="m", train="t",
                                                      minutes=30.0, lr=3e-5, lora=True))
    assert (opts.minutes, opts.lr, opts.lora) == (30.0, 3e-5, True)
    assert opts.epochs == get_task("ner").defaults["epochs"] and "lr" not in from_task


@pytest.mark.parametrize(("minutes", "max_minutes", "by_time", "fits"),
                         [(30.0, 0.0, True, False), (0.0, 45.0, False, True),
                          (0.0, 0.0, False, False)])
def test_time_options_choose_the_trainers_schedule(tmp_path, minutes, max_minutes, by_time,
                                                   fits):
    """--minutes plans the schedule over the budget; --max-minutes makes a cut run decay
    within it (zenlm.train's schedule_fits_max_minutes); neither: the steps alone."""
    import torch

    from zenlm.tasks.runner import FinetuneOptions, _trainer, resolve_options

    opts, _ = resolve_options(FinetuneOptions(task="classify", model="m", train="t",
                                              output=str(tmp_path / "run"),
                                              minutes=minutes, max_minutes=max_minutes))
    trainer = _trainer(opts, torch.nn.Linear(2, 2), [SimpleNamespace(ids=[1, 2])] * 4,
                       [SimpleNamespace(ids=[1, 2])], collate=None, objective=None,
                       metric=None)
    assert (trainer.loop.schedule_by_time, trainer.loop.schedule_fits_max_minutes) == (by_time,
                                                                                       fits)
