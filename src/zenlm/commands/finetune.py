"""`zenlm finetune` and `zenlm predict` for the registered tasks.

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


def predict_command(task: str, model: str, input: str, output: str | None = None,
                    max_new_tokens: int = 256) -> int:
    """Predict for every record of a file (labels, if present, are ignored); JSON Lines out."""
    from zenlm.tasks.checkpoint import load_task_model
    from zenlm.tasks.evaluate import check_task
    from zenlm.tasks.predict import predict_records

    network, tokenizer, info = load_task_model(model)
    check_task(task, info.task)
    handle = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    try:
        for record in predict_records(network, tokenizer, info, input,
                                      max_new_tokens=max_new_tokens):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    finally:
        if output:
            handle.close()
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add `finetune` and `predict`."""
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
