"""`zenlm evaluate`: score a model on a file and report it (JSON, Markdown, PNG plots).

Two kinds of `--task`: the fine-tuning tasks (classify, ner, qa, translate, ...), which
score a `zenlm finetune` output folder with its own head, and the evaluations of
`zenlm.eval.registry` (perplexity, multiple choice, ...), which score any model.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from zenlm.eval.calibration import DEFAULT_BINS
from zenlm.eval.report import Report

COMMON = ("task", "model", "data", "as_json", "report", "quantize")
_OWN_OPTIONS: dict[str, list[str]] = {}  # task -> the dests of its own argument group


def evaluate_command(task: str, model: str, data: str | None = None, as_json: bool = False,
                     report: str | None = None, quantize: str = "none",
                     **options: Any) -> int:
    """Run one evaluation; print Markdown (or `--json`) and write `--report DIR`."""
    _refuse_foreign_options(task, options)
    own = {name: options[name] for name in _OWN_OPTIONS.get(task, [])}
    result = _run(task, model, data, quantize, own)
    if report:
        for path in result.write(report):
            print(f"wrote {path}", file=sys.stderr)
    if as_json:
        print(json.dumps(result.to_json(), ensure_ascii=False, default=str))
    else:
        print(result.markdown())
    return 0


def _run(task: str, model: str, data: str | None, quantize: str,
         own: dict[str, Any]) -> Report:
    from zenlm.eval.registry import evaluations

    evaluation = evaluations().get(task)
    if evaluation is not None:
        return evaluation.run(model=model, data=data, quantize=quantize, **own)
    from zenlm.tasks.evaluate import evaluate_finetuned

    return evaluate_finetuned(task, model, data, **own)


def _refuse_foreign_options(task: str, options: dict[str, Any]) -> None:
    """An option of another task, given a value, is a mistake: say whose it is."""
    for owner, names in _OWN_OPTIONS.items():
        if owner == task:
            continue
        for name in names:
            if name in _OWN_OPTIONS.get(task, []) or name not in options:
                continue
            if options[name] != _DEFAULTS.get(name):
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} is an option of --task {owner}, not of --task {task}")


_DEFAULTS: dict[str, Any] = {}


def register(commands: argparse._SubParsersAction) -> None:
    """Add `evaluate`."""
    from zenlm.eval.registry import evaluations
    from zenlm.quant import QUANTIZE_MODES
    from zenlm.tasks.registry import task_names

    tuned = task_names()
    extra = evaluations()
    ev = commands.add_parser(
        "evaluate", help="score a model on a file: perplexity, multiple choice, bias, "
        "generation, or a fine-tuned task's metrics")
    ev.add_argument("--task", choices=[*extra, *tuned], required=True,
                    help="what to evaluate")
    ev.add_argument("--model", required=True,
                    help="model folder, .gguf file or short name (a `zenlm finetune` "
                    "output folder for the fine-tuning tasks)")
    ev.add_argument("--data", default=None, help="the file to score, in the task's format")
    ev.add_argument("--json", action="store_true", dest="as_json",
                    help="print the report as one JSON object instead of Markdown")
    ev.add_argument("--report", default=None, metavar="DIR",
                    help="write report.json, report.md and PNG plots into DIR")
    ev.add_argument("--quantize", default="none", choices=QUANTIZE_MODES,
                    help="weights to score with (default none: the model's float32 "
                    "numbers, comparable with other tools)")
    groups = [("fine-tuned tasks", tuned, _add_finetuned_options)]
    groups += [(name, [name], evaluation.add_options) for name, evaluation in extra.items()]
    for title, owners, add_options in groups:
        group = ev.add_argument_group(f"--task {title}")
        add_options(group)
        dests = [action.dest for action in group._group_actions]
        _DEFAULTS.update({action.dest: action.default for action in group._group_actions})
        for owner in owners:
            _OWN_OPTIONS[owner] = dests
    ev.set_defaults(handler=evaluate_command)


def _add_finetuned_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--source", default=None, help="translate/summarize: source text file")
    group.add_argument("--target", default=None,
                       help="translate/summarize: aligned target file")
    group.add_argument("--num-beams", type=int, default=None,
                       help="translate/summarize: beam width (default: the model's task.json)")
    group.add_argument("--plot", default=None, metavar="PATH",
                       help="classify/ner: also write the confusion matrix's heat map to PATH "
                       "(PNG, SVG or PDF; --report DIR writes it with the rest)")
    group.add_argument("--bins", type=int, default=DEFAULT_BINS,
                       help="classify/ner/qa: equal-width bins of the calibration "
                       f"(reliability diagram, ECE; default {DEFAULT_BINS}, as Guo et al. "
                       "2017)")
