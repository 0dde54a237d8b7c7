"""benchmarks/finetune_sweep.py: its runs are real `zenlm finetune` command lines, its table
marks the default, and its answer-choice grid scores as `zenlm evaluate` does."""

from __future__ import annotations

import importlib.util
import json
import shlex
import sys
from pathlib import Path

import pytest

from zenlm.cli import build_parser, main

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "finetune_sweep.py"


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("finetune_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_dry_run_lists_the_default_then_one_change_per_run(sweep, tmp_path, capsys):
    assert sweep.main(["conll", "--dry-run", "--grid", "default,lr,freeze",
                       "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("CPU: ") and "flags: " in out
    lines = [line for line in out.splitlines() if line.startswith("[")]
    expected = 1 + len(sweep.GRIDS["conll"]["lr"]) + len(sweep.GRIDS["conll"]["freeze"])
    assert len(lines) == expected and lines[0].startswith("[default] ")
    default = shlex.split(lines[0].split("] ", 1)[1])
    assert default[1:4] == ["-m", "zenlm", "finetune"]
    assert default[-2:] == ["--max-minutes", "45.0"]  # the task's own defaults: no other flag
    assert "--lr" in lines[1] and "--no-freeze-embeddings" in lines[-2]
    assert not (tmp_path / "conll").exists()  # a dry run writes nothing


@pytest.mark.parametrize("name", ["sst2", "conll", "squad"])
def test_every_grid_run_parses_as_a_finetune_command(sweep, name):
    parser = build_parser()
    for grid in sweep.GRIDS[name]:
        for flags in sweep.GRIDS[name][grid]:
            parser.parse_args(["finetune", "--task", sweep.TASKS[name], "--model", "m",
                               "--train", "t", *flags])


def test_unknown_grid_is_refused_with_the_valid_ones(sweep, capsys):
    with pytest.raises(SystemExit):
        sweep.main(["sst2", "--dry-run", "--grid", "lr,colour"])
    assert "--grid colour: not a grid of sst2; valid: default, lr" in capsys.readouterr().err


def test_runs_of_an_earlier_invocation_are_reused_and_kept(sweep, tmp_path, monkeypatch):
    """A second invocation with another grid trains only its new runs; the table keeps the
    earlier grid's runs; a failed earlier run is run again."""
    trained = []

    def fake_train(name, run, args, data):
        trained.append(run.name)
        return {"name": run.name, "grid": run.grid, "flags": run.flags,
                "default": run.is_default, "metric": "f1", "score": 0.5, "best_step": 1,
                "steps": 1, "train_minutes": 0.1}

    monkeypatch.setattr(sweep, "train", fake_train)
    out = ["--out", str(tmp_path)]
    assert sweep.main(["conll", "--grid", "lr", *out]) == 0
    assert trained == ["default", "lr 5e-5", "lr 2e-4"]
    results = tmp_path / "conll" / "results.json"
    earlier = json.loads(results.read_text())
    earlier["runs"][2] = {"name": "lr 2e-4", "grid": "lr", "flags": [], "error": "killed"}
    results.write_text(json.dumps(earlier))
    trained.clear()
    assert sweep.main(["conll", "--grid", "warmup", *out]) == 0
    assert trained == ["warmup-fraction 0.0", "warmup-fraction 0.1"]
    names = [run["name"] for run in json.loads(results.read_text())["runs"]]
    assert names == ["default", "warmup-fraction 0.0", "warmup-fraction 0.1", "lr 5e-5"]
    trained.clear()
    assert sweep.main(["conll", "--grid", "lr", *out]) == 0
    assert trained == ["lr 2e-4"]  # the failed one only


def test_table_marks_the_default_row_only(sweep):
    rows = [{"name": "default", "grid": "default", "default": True, "metric": "accuracy",
             "score": 0.912, "best_step": 700, "steps": 758, "train_minutes": 17.2},
            {"name": "lr 2e-4", "grid": "lr", "default": False, "metric": "accuracy",
             "score": 0.905, "best_step": 758, "steps": 758, "train_minutes": 17.0},
            {"name": "lr 5e-5", "grid": "lr", "flags": [], "error": "killed"}]
    table = sweep.markdown_table(rows, "sst2").splitlines()
    marked = [line for line in table if "← default" in line]
    assert marked == ["| default | default | accuracy 0.912 | 700 / 758 | 17.2 | **← default** |"]
    assert table[-1].startswith("| lr | lr 5e-5 | failed: killed")


def _articles(path: Path) -> list[dict]:
    cities = ["Paris", "Oslo", "Lima", "Berlin"]
    articles = []
    for a in range(4):
        paragraphs = []
        for i in range(5):
            city = cities[(a + i) % 4]
            context = f"In story {a}{i}, Mary travelled by train to {city} for the long winter."
            paragraphs.append({"context": context, "qas": [{
                "id": f"q{a}-{i}", "question": "Where did Mary travel to?",
                "answers": [{"text": city, "answer_start": context.index(city)}]}]})
        articles.append({"title": f"article {a}", "paragraphs": paragraphs})
    path.write_text(json.dumps({"data": articles}))
    return articles


def test_answer_choice_grid_scores_as_evaluate_does(sweep, minilm_folder, tmp_path, capsys):
    """One trained model, re-scored without retraining: each cell = `zenlm evaluate`."""
    from zenlm.tasks.registry import get_task

    data = tmp_path / "train.json"
    articles = _articles(data)
    assert main(["finetune", "--task", "qa", "--model", str(minilm_folder), "--train", str(data),
                 "--output", str(tmp_path / "run"), "--max-steps", "3", "--max-length", "48",
                 "--stride", "8", "--batch-size", "4"]) == 0
    rows = sweep.decode_grid(str(tmp_path / "run" / "model"), ["--train", str(data)])
    assert len(rows) == len(sweep.N_BEST) * len(sweep.MAX_ANSWER_LENGTH)
    assert [r["name"] for r in rows if r["default"]] == ["n-best 20 max-answer-length 30"]
    # the held-out article of finetune's split, alone in a file for `zenlm evaluate`
    _, held = get_task("qa").split(get_task("qa").read(data), 0.1, 0)
    title = {e.title for e in held}
    held_file = tmp_path / "held.json"
    held_file.write_text(json.dumps({"data": [a for a in articles if a["title"] in title]}))
    for row in (rows[0], rows[-1], next(r for r in rows if r["default"])):
        capsys.readouterr()
        assert main(["evaluate", "--task", "qa", "--model", str(tmp_path / "run" / "model"),
                     "--data", str(held_file), "--json", *row["flags"]]) == 0
        scores = json.loads(capsys.readouterr().out)
        assert (scores["f1"], scores["exact_match"], scores["n"]) == pytest.approx(
            (row["f1"], row["exact_match"], row["n"]))
