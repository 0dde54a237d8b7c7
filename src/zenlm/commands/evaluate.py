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

# task -> {dest: its default} of its own options. A flag several tasks share (--seed,
# --batch-size, --predictions, ...) is one argparse option; each task keeps its own default.
_OWN_OPTIONS: dict[str, dict[str, Any]] = {}


def evaluate_command(task: str, model: str, data: str | None = None, as_json: bool = False,
                     report: str | None = None, quantize: str = "none",
                     **options: Any) -> int:
    """Run one evaluation; print Markdown (or `--json`) and write `--report DIR`.

    `options` holds only the task options given on the command line (their argparse
    default is SUPPRESS); the others take the task's own defaults.
    """
    _refuse_foreign_options(task, options)
    own = {name: options.get(name, default)
           for name, default in _OWN_OPTIONS.get(task, {}).items()}
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
    """An option of another task, given on the command line, is a mistake: say whose it is."""
    mine = _OWN_OPTIONS.get(task, {})
    for name in options:
        if name in mine:
            continue
        owners = [owner for owner, names in _OWN_OPTIONS.items() if name in names]
        flag = "--" + name.replace("_", "-")
        raise ValueError(f"{flag} is an option of --task {' / '.join(owners)}, not of "
                         f"--task {task}")


class _TaskGroup:
    """An argument group whose flags other tasks may share (see `_OWN_OPTIONS`).

    A flag seen first here is added to `group` with default SUPPRESS (so the parsed
    arguments hold only what was given); a flag another task added already is reused,
    its help extended with this task's. Either way this task's default is kept.
    """

    def __init__(self, group: argparse._ArgumentGroup, parser: argparse.ArgumentParser,
                 owners: list[str]) -> None:
        self.group, self.parser, self.owners = group, parser, owners

    def add_argument(self, *flags: str, **kwargs: Any) -> argparse.Action:
        """`add_argument`, sharing a flag that exists already."""
        flag_default = {"store_true": False, "store_false": True}.get(kwargs.get("action"))
        default = kwargs.pop("default", flag_default)
        existing = self.parser._option_string_actions.get(flags[0])
        if existing is None:
            action = self.group.add_argument(*flags, default=argparse.SUPPRESS, **kwargs)
        else:
            action = existing
            kind = self.parser._registry_get("action", kwargs.get("action", "store"))
            if existing.type is not kwargs.get("type") or type(existing) is not kind:
                raise TypeError(f"{flags[0]} is shared by evaluations with different types "
                                "or actions; give it another name")
            if kwargs.get("help"):
                existing.help = f"{existing.help}; {kwargs['help']}"
        for owner in self.owners:
            _OWN_OPTIONS.setdefault(owner, {})[action.dest] = default
        return action


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
        add_options(_TaskGroup(ev.add_argument_group(f"--task {title}"), ev, owners))
    ev.set_defaults(handler=evaluate_command)


def _add_finetuned_options(group: Any) -> None:
    group.add_argument("--source", default=None, help="translate/summarize: source text file")
    group.add_argument("--target", default=None,
                       help="translate/summarize: aligned target file")
    group.add_argument("--num-beams", type=int, default=None,
                       help="translate/summarize: beam width (default: the model's task.json)")
    group.add_argument("--n-best", type=int, default=None,
                       help="qa: span candidates per window (default: the model's task.json)")
    group.add_argument("--max-answer-length", type=int, default=None,
                       help="qa: longest answer in tokens (default: the model's task.json)")
    group.add_argument("--plot", default=None, metavar="PATH",
                       help="classify/ner: also write the confusion matrix's heat map to PATH "
                       "(PNG, SVG or PDF; --report DIR writes it with the rest)")
    group.add_argument("--bins", type=int, default=DEFAULT_BINS,
                       help="classify/ner/qa: equal-width bins of the calibration "
                       f"(reliability diagram, ECE; default {DEFAULT_BINS}, as Guo et al. "
                       "2017)")
