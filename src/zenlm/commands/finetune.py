"""`zenlm finetune` and `zenlm predict` for the registered tasks.

The tasks (classify, ner, qa, sft, ...) are those of `zenlm.tasks.registry`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from typing import Any

# Help of each `zenlm finetune` flag (the fields of FinetuneOptions; a test checks that
# every flag has one).
FINETUNE_HELP = {
    "val": "validation file (default: --val-fraction of --train is held out)",
    "train_target": "translate/summarize: aligned target file (--train is the source)",
    "val_target": "translate/summarize: aligned target file of --val",
    "output": "run folder: checkpoints, and the fine-tuned model in <output>/model",
    "val_fraction": "share of --train held out for validation when --val is not given",
    "epochs": "passes over the training data (fractions allowed)",
    "max_steps": "optimizer steps; overrides --epochs when > 0",
    "max_minutes": "stop after this wall-clock time; if the planned steps would not fit, "
                   "warm-up and decay follow the clock and end with it",
    "minutes": "a time budget: the schedule (warm-up, decay) is planned to fit it",
    "batch_size": "examples per optimizer step",
    "lr": "peak learning rate (AdamW)",
    "head_lr": "peak learning rate of the new task head (default: --lr); a fresh head "
               "often wants a larger one, notably under --dp-epsilon",
    "warmup_fraction": "share of the schedule spent warming the learning rate up",
    "weight_decay": "AdamW weight decay",
    "max_length": "tokens per example (longer inputs are truncated or windowed)",
    "stride": "qa: overlap in tokens between windows of a long context",
    "n_best": "qa: start and end candidates per window when choosing the answer span",
    "max_answer_length": "qa: longest answer span in tokens",
    "pooling": "classify: cls | mean | last (default: the model's own)",
    "label_prompts": "classify: start the head as a zero-shot classifier, cosine similarity to "
                     "a text per label: a JSON object such as '{\"0\": \"a terrible movie\", "
                     "\"1\": \"a great movie\"}' or a .json file holding one (a head that "
                     "starts right helps most under --dp-epsilon)",
    "class_weights": "classify/ner: inverse-frequency weights in the loss",
    "freeze_layers": "freeze the embeddings and this many lowest blocks",
    "freeze_embeddings": "freeze the token embeddings only",
    "dropout": "dropout rate on each block's sub-layer outputs while training (BERT's "
               "hidden dropout)",
    "group_by_length": "batch examples of similar length (less padding)",
    "extend_vocab": "add up to this many characters of --train unknown to the tokenizer",
    "bitfit": "train only the biases, the norms' weights and the head (BitFit: a few "
              "tenths of a percent of the weights; cheap, and little noise under DP)",
    "lora": "train low-rank adapters instead of every weight",
    "lora_rank": "LoRA rank r",
    "lora_alpha": "LoRA scale alpha (updates are scaled by alpha / r)",
    "lora_dropout": "dropout on the LoRA branch's input",
    "lora_targets": "linear layers that get adapters (comma-separated names)",
    "pack": "sft: pack several conversations into one row (never under --dp-epsilon: one "
            "conversation per row, the privacy unit)",
    "eval_every": "steps between validation evaluations (0: at the end only)",
    "patience": "stop after this many evaluations without improvement (0: never)",
    "label_smoothing": "translate/summarize: label smoothing of the target-token loss",
    "num_beams": "translate/summarize: beams when validating (saved in task.json)",
    "long_inputs": "translate/summarize: truncate, or error on, inputs past --max-length",
    "seed": "seed of the split, the sampler and the new weights",
    "dtype": "dtype of the loaded weights",
    "autocast": "training arithmetic: auto (bfloat16 only where the CPU has it natively), "
                "float32 or bfloat16",
    "dp_epsilon": "train with differential privacy (DP-SGD, Opacus) to this epsilon over the "
                  "planned steps (default: not private)",
    "dp_delta": "DP: target delta, below 1/(training examples)",
    "dp_max_grad_norm": "DP: clip each example's gradient to this L2 norm before noise "
                        "(non-private runs clip the batch gradient to 1.0)",
    "dp_accountant": "DP: privacy accountant, rdp or prv",
    "dp_physical_batch": "DP: rows per forward pass; each Poisson batch is sorted by length "
                         "and computed in pieces this big (0: all at once)",
    "dp_clipping": "DP: per-example clipping by ghost clipping (gradient norms from two "
                   "backward passes, no per-example gradients held) or exact (per-example "
                   "gradients materialised); the same clipped update",
}


def finetune_command(**options: Any) -> int:
    """Fine-tune a model on a task file and print the validation summary as JSON."""
    from zenlm.tasks.runner import FinetuneOptions, finetune

    if isinstance(options.get("lora_targets"), str):
        options["lora_targets"] = [t for t in options["lora_targets"].split(",") if t]
    summary = finetune(FinetuneOptions(**options))
    print(json.dumps(summary, indent=2, ensure_ascii=False, default=str))
    sys.stderr.write(summary["line"] + "\n")  # stdout stays one JSON document
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
    from zenlm.tasks.defaults import GENERIC, default_help
    from zenlm.tasks.registry import get_task, task_names
    from zenlm.tasks.runner import FinetuneOptions

    tasks = task_names()
    specs = [get_task(name) for name in tasks]
    tune = commands.add_parser("finetune", help="fine-tune a model on a task (full or LoRA)")
    tune.add_argument("--task", choices=tasks, required=True, help="what to fine-tune for")
    tune.add_argument("--model", required=True, help="model folder, .gguf file or short name")
    tune.add_argument("--train", required=True, help="training file")
    defaults = {f.name: f for f in dataclasses.fields(FinetuneOptions)}
    hints = typing.get_type_hints(FinetuneOptions)
    for name, spec in defaults.items():
        if name in ("task", "model", "train"):
            continue
        flag = "--" + name.replace("_", "-")
        missing = spec.default is dataclasses.MISSING
        default = spec.default_factory() if missing else spec.default
        text = FINETUNE_HELP.get(name)
        if name in GENERIC:  # per task: absent stays None, the task's default fills it in
            _add_tuned(tune, flag, GENERIC[name], f"{text} ({default_help(name, specs)})")
            continue
        if isinstance(default, bool):
            tune.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                              help=text)
        elif isinstance(default, list):
            tune.add_argument(flag, default=",".join(default), help=text)
        else:
            kind = type(default) if default is not None else _optional_type(hints[name])
            tune.add_argument(flag, type=kind, default=default, help=text)
    tune.set_defaults(handler=finetune_command)

    pred = commands.add_parser("predict", help="predict with a fine-tuned model")
    pred.add_argument("--task", choices=tasks, required=True,
                      help="the task the model was fine-tuned for")
    pred.add_argument("--model", required=True, help="a `zenlm finetune` output model folder")
    pred.add_argument("--input", required=True, help="file in the task's format")
    pred.add_argument("--output", default=None, help="JSON Lines file (default: stdout)")
    pred.add_argument("--max-new-tokens", type=int, default=256, help="sft replies")
    pred.set_defaults(handler=predict_command)


def _optional_type(hint: Any) -> type:
    """The parser type of an `X | None` option (`float | None` -> float; else str)."""
    kinds = [k for k in typing.get_args(hint) if k is not type(None)]
    return kinds[0] if len(kinds) == 1 and kinds[0] in (int, float, str) else str


def _add_tuned(parser: argparse.ArgumentParser, flag: str, generic: Any, text: str) -> None:
    """A flag whose default is the task's own (`zenlm.tasks.defaults`): absent means None."""
    if isinstance(generic, bool):
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                            help=text)
    else:
        parser.add_argument(flag, type=type(generic), default=None, help=text)
