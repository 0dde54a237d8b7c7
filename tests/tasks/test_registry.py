"""The task registry and task.json: names refused with the valid list, old files still read."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from zenlm.cli import main
from zenlm.errors import CheckpointError
from zenlm.tasks.checkpoint import read_task_info
from zenlm.tasks.registry import get_task, task_names
from zenlm.tasks.spec import TaskInfo, TaskSpec

SRC = Path(__file__).resolve().parents[2] / "src" / "zenlm"
# What `save_task_model` wrote before TaskInfo existed (a plain dict, no "format" key).
OLD_TASK_JSON = {"task": "classify", "labels": ["neg", "pos"], "max_length": 64, "stride": 128,
                 "pooling": None, "arch": "encoder", "base_model": "minilm", "added_tokens": 3}


def test_every_task_is_a_spec_under_its_own_name():
    assert set(task_names()) >= {"classify", "ner", "qa", "sft"}
    for name in task_names():
        spec = get_task(name)
        assert isinstance(spec, TaskSpec) and spec.name == name
        assert spec.headline  # evaluate's key for model selection


def test_unknown_task_is_refused_with_the_valid_names():
    with pytest.raises(ValueError, match="unknown task 'paraphrase'") as info:
        get_task("paraphrase")
    assert all(name in str(info.value) for name in ("classify", "ner", "qa", "sft", "translate"))


def test_cli_refuses_an_unknown_task_listing_the_choices(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "--task", "paraphrase", "--model", "m", "--train", "t"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "'paraphrase'" in err and "classify" in err and "sft" in err


def test_no_task_name_dispatch_outside_the_registry():
    pattern = re.compile(r"""task\s*(==|!=|in)\s*[("']""")
    offenders = [f"{path.relative_to(SRC)}:{number}"
                 for path in SRC.rglob("*.py") if path.name != "registry.py"
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if pattern.search(line)]
    assert offenders == []


def test_task_info_round_trips_through_json():
    info = TaskInfo(task="ner", labels=["O", "B-PER", "I-PER"], max_length=32, stride=8,
                    pooling="mean", arch="encoder", base_model="x", added_tokens=2, dropout=0.2,
                    options={"source": "en", "beams": 4})
    text = info.to_json()
    assert json.loads(text)["format"] == 2
    assert TaskInfo.from_json(text) == info


def test_task_json_of_the_first_layout_still_reads(tmp_path):
    (tmp_path / "task.json").write_text(json.dumps(OLD_TASK_JSON))
    info = read_task_info(tmp_path)
    assert info == TaskInfo(**OLD_TASK_JSON)
    assert info.dropout == 0.1  # the default build_task_model used for old files


@pytest.mark.parametrize(("record", "message"), [
    ({**OLD_TASK_JSON, "task": "paraphrase"}, "unknown task 'paraphrase'; valid tasks: classify"),
    ({**OLD_TASK_JSON, "colour": "red"}, "unknown keys ['colour']"),
    ({**OLD_TASK_JSON, "format": 99}, "format 99 is not one of"),
    ({"labels": []}, "no 'task' key"),
    (["classify"], "expected a JSON object"),
])
def test_bad_task_json_is_refused_by_name(tmp_path, record, message):
    (tmp_path / "task.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=re.escape(message)):
        read_task_info(tmp_path)


def test_folder_without_task_json_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no task.json"):
        read_task_info(tmp_path)


def test_qa_split_keeps_each_article_on_one_side():
    from zenlm.data.tasks import QAExample

    examples = [QAExample(id=str(i), question="q", context="c", answers=[], title=f"t{i % 5}")
                for i in range(20)]
    train, val = get_task("qa").split(examples, 0.2, seed=0)
    assert len(train) + len(val) == 20 and val
    assert not {e.title for e in train} & {e.title for e in val}


def test_class_weights_on_a_task_without_classes_is_refused(tmp_path):
    from zenlm.tasks.runner import FinetuneOptions, finetune

    with pytest.raises(ValueError, match="--class-weights does not apply to task 'qa'"):
        finetune(FinetuneOptions(task="qa", model="unused", train="unused",
                                 class_weights=True, output=str(tmp_path)))
