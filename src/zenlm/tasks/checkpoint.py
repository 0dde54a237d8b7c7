"""Task model folders: the backbone as a Hugging Face folder, plus the head and task.json.

Layout of a fine-tuned model folder:
    config.json, model.safetensors, tokenizer files   the backbone (LoRA merged in)
    head.safetensors                                  the task head (absent for sft)
    adapter.safetensors                               the LoRA adapters alone (with --lora)
    task.json                                         task, labels, pooling, lengths
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

import zenlm
from zenlm.errors import CheckpointError
from zenlm.io.hf import save_hf_model
from zenlm.models.heads import SequenceClassifier, SpanQA, TokenClassifier
from zenlm.nn.lora import lora_layers, merge_lora, save_adapters, unmerge_lora


def backbone_of(model: nn.Module) -> nn.Module:
    """The backbone of a task model (the model itself for sft)."""
    return getattr(model, "backbone", model)


def save_task_model(model: nn.Module, folder: str | Path, tokenizer: Any,
                    info: dict[str, Any]) -> Path:
    """Write a task model folder (see the module docstring); LoRA stays unmerged in memory."""
    folder = Path(folder)
    backbone = backbone_of(model)
    lora = bool(lora_layers(backbone))
    if lora:
        save_adapters(backbone, folder / "adapter.safetensors")
        merge_lora(backbone)
    try:
        save_hf_model(backbone, folder, tokenizer)
    finally:
        if lora:
            unmerge_lora(backbone)
    if backbone is not model:
        head = {f"head.{k}": v.detach().contiguous() for k, v in model.head.state_dict().items()}
        save_file(head, str(folder / "head.safetensors"))
    (folder / "task.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n",
                                      encoding="utf-8")
    return folder


def load_task_model(folder: str | Path) -> tuple[nn.Module, Any, dict[str, Any]]:
    """(task model in eval mode, tokenizer, task info) of a folder `save_task_model` wrote."""
    folder = Path(folder)
    path = folder / "task.json"
    if not path.is_file():
        raise CheckpointError(f"{folder}: no task.json; is this a `zenlm finetune` output?")
    info = json.loads(path.read_text(encoding="utf-8"))
    lm = zenlm.load(folder, quantize=None)
    model = build_task_model(info, lm.model)
    if model is not lm.model:
        state = {k.removeprefix("head."): v for k, v in
                 load_file(str(folder / "head.safetensors")).items()}
        model.head.load_state_dict(state)
    return model.eval(), lm.tokenizer, info


def build_task_model(info: dict[str, Any], backbone: nn.Module) -> nn.Module:
    """The task model `info["task"]` around `backbone` (a fresh head)."""
    task = info["task"]
    if task == "classify":
        return SequenceClassifier(backbone, len(info["labels"]), pooling=info.get("pooling"),
                                  dropout=info.get("dropout", 0.1))
    if task == "ner":
        return TokenClassifier(backbone, len(info["labels"]), dropout=info.get("dropout", 0.1))
    if task == "qa":
        return SpanQA(backbone)
    if task == "sft":
        return backbone
    raise ValueError(f"task must be classify, ner, qa or sft, got {task!r}")
