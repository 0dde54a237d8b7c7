"""`zenlm finetune`, `zenlm predict` and `zenlm evaluate` for the registered tasks.

The tasks (classify, ner, qa, sft, ...) are those of `zenlm.tasks.registry`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any


def finetune_command(**options: Any) -> int:
    """Fine-tune a model on a task file and print the validation summary as JSON."""
    from zenlm.tasks.runner import FinetuneOptions, finetune

    if isinstance(options.get("lora_targets"), str):
        options["lora_targets"] = [t for t in options["lora_targets"].split(",") if t]
    summary = finetune(FinetuneOptions(**options))
    print(json.dumps(summary, indent=2, ensure_ascii=False, default=str))
    return 0


def evaluate_command(task: str, model: str, data: str | None = None, as_json: bool = False,
                     plot: str | None = None, source: str | None = None,
                     target: str | None = None, num_beams: int | None = None) -> int:
    """Score a fine-tuned model on a labelled file: Markdown report, or one JSON object."""
    from zenlm.eval.metrics import plot_confusion_matrix
    from zenlm.tasks.checkpoint import backbone_of, load_task_model
    from zenlm.tasks.registry import get_task
    from zenlm.tasks.spec import pad_id

    spec = get_task(task)
    network, tokenizer, info = load_task_model(model)
    _check_task(task, info.task)
    if num_beams is not None:
        info.options["num_beams"] = num_beams
    data, where = _evaluation_data(spec, data, source, target)
    examples = spec.read(data, info.labels or None)
    scores = spec.evaluate(network, tokenizer, info, examples,
                           pad_id(tokenizer, backbone_of(network).config))
    if plot:
        if "confusion_matrix" not in scores:
            raise ValueError(f"--plot draws a confusion matrix, which task {task!r} has not")
        plot_confusion_matrix(scores["confusion_matrix"], info.labels, plot)
    if as_json:
        print(json.dumps(scores, ensure_ascii=False))
    else:
        print(_markdown(task, model, where, scores))
    return 0


def _evaluation_data(spec: Any, data: str | None, source: str | None,
                     target: str | None) -> tuple[str | tuple[str, str], str]:
    """What `spec.read` takes (a file, or source and target files), and how to name it."""
    if source is None and target is None:
        if data is None:
            raise ValueError("give --data FILE (or --source F --target F for parallel text)")
        return data, data
    if data is not None or source is None or target is None or not spec.parallel:
        raise ValueError("--source and --target go together, instead of --data, and only "
                         "for translate/summarize")
    return (source, target), f"{source} + {target}"


def predict_command(task: str, model: str, input: str, output: str | None = None,
                    max_new_tokens: int = 256) -> int:
    """Predict for every record of a file (labels, if present, are ignored); JSON Lines out."""
    from zenlm.tasks.checkpoint import load_task_model
    from zenlm.tasks.predict import predict_records

    network, tokenizer, info = load_task_model(model)
    _check_task(task, info.task)
    handle = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    try:
        for record in predict_records(network, tokenizer, info, input,
                                      max_new_tokens=max_new_tokens):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    finally:
        if output:
            handle.close()
    return 0


def _check_task(task: str, trained_for: str) -> None:
    if trained_for != task:
        raise ValueError(f"this model was fine-tuned for --task {trained_for}, not {task}")


def _markdown(task: str, model: str, data: str, scores: dict[str, Any]) -> str:
    lines = [f"# {task} evaluation", "", f"- model: `{model}`", f"- data: `{data}`",
             f"- examples: {scores.get('n')}", "", "| metric | value |", "| --- | --- |"]
    for key, value in scores.items():
        if isinstance(value, float):
            lines.append(f"| {key} | {value:.4f} |")
    per = scores.get("per_class") or scores.get("per_type")
    if per:
        lines += ["", "| label | precision | recall | f1 | support |",
                  "| --- | --- | --- | --- | --- |"]
        for label, m in per.items():
            lines.append(f"| {label} | {m['precision']:.4f} | {m['recall']:.4f} | "
                         f"{m['f1']:.4f} | {m['support']} |")
    return "\n".join(lines)


def register(commands: argparse._SubParsersAction) -> None:
    """Add `finetune`, `predict` and `evaluate`."""
    from zenlm.tasks.registry import task_names
    from zenlm.tasks.runner import FinetuneOptions

    tasks = task_names()
    tune = commands.add_parser("finetune", help="fine-tune a model on a task (full or LoRA)")
    tune.add_argument("--task", choices=tasks, required=True)
    tune.add_argument("--model", required=True, help="model folder, .gguf file or short name")
    tune.add_argument("--train", required=True, help="training file")
    defaults = {f.name: f for f in dataclasses.fields(FinetuneOptions)}
    for name, spec in defaults.items():
        if name in ("task", "model", "train"):
            continue
        flag = "--" + name.replace("_", "-")
        missing = spec.default is dataclasses.MISSING
        default = spec.default_factory() if missing else spec.default
        if isinstance(default, bool):
            tune.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif isinstance(default, list):
            tune.add_argument(flag, default=",".join(default), help="comma-separated")
        else:
            kind = type(default) if default is not None else str
            tune.add_argument(flag, type=kind, default=default)
    tune.set_defaults(handler=finetune_command)

    pred = commands.add_parser("predict", help="predict with a fine-tuned model")
    pred.add_argument("--task", choices=tasks, required=True)
    pred.add_argument("--model", required=True, help="a `zenlm finetune` output model folder")
    pred.add_argument("--input", required=True, help="file in the task's format")
    pred.add_argument("--output", default=None, help="JSON Lines file (default: stdout)")
    pred.add_argument("--max-new-tokens", type=int, default=256, help="sft replies")
    pred.set_defaults(handler=predict_command)

    ev = commands.add_parser("evaluate", help="a fine-tuned model's metrics on a labelled file")
    ev.add_argument("--task", choices=tasks, required=True)
    ev.add_argument("--model", required=True)
    ev.add_argument("--data", default=None, help="labelled file in the task's format")
    ev.add_argument("--source", default=None, help="translate/summarize: source text file")
    ev.add_argument("--target", default=None, help="translate/summarize: aligned target file")
    ev.add_argument("--num-beams", type=int, default=None,
                    help="translate/summarize: beam width (default: the model's task.json)")
    ev.add_argument("--json", action="store_true", dest="as_json")
    ev.add_argument("--plot", default=None, help="classify: confusion-matrix image path")
    ev.set_defaults(handler=evaluate_command)
