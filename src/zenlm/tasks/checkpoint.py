"""Task model folders: the backbone as a Hugging Face folder, plus the head and task.json.

Layout of a fine-tuned model folder:
    config.json, model.safetensors, tokenizer files   the backbone (LoRA merged in)
    head.safetensors                                  the task head (absent for sft)
    adapter.safetensors                               the LoRA adapters alone (with --lora)
    task.json                                         TaskInfo (task, labels, pooling, lengths)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from zenlm.api import load
from zenlm.errors import CheckpointError
from zenlm.io.hf import save_hf_model
from zenlm.nn.cpu_attention import use_cpu_attention
from zenlm.nn.lora import lora_layers, merge_lora, save_adapters, unmerge_lora
from zenlm.tasks.registry import get_task
from zenlm.tasks.spec import TaskInfo


def backbone_of(model: nn.Module) -> nn.Module:
    """The backbone of a task model (the model itself when the task adds no head).

    Task heads (`zenlm.models.heads`) hold their backbone as the child module "backbone".
    """
    return dict(model.named_children()).get("backbone", model)


def save_task_model(model: nn.Module, folder: str | Path, tokenizer: Any,
                    info: TaskInfo) -> Path:
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
    (folder / "task.json").write_text(info.to_json(), encoding="utf-8")
    return folder


def read_task_info(folder: str | Path) -> TaskInfo:
    """The TaskInfo of a model folder's task.json, its task checked against the registry.

    Raises:
        CheckpointError: no task.json, an unreadable one, or a task zenlm does not know.
    """
    path = Path(folder) / "task.json"
    if not path.is_file():
        raise CheckpointError(f"{folder}: no task.json; is this a `zenlm finetune` output?")
    info = TaskInfo.from_json(path.read_text(encoding="utf-8"), where=str(path))
    try:
        get_task(info.task)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return info


def load_task_model(folder: str | Path) -> tuple[nn.Module, Any, TaskInfo]:
    """(task model in eval mode, tokenizer, task info) of a folder `save_task_model` wrote.

    For evaluate and predict: the weights as trained, with the CPU attention kernels.
    """
    folder = Path(folder)
    info = read_task_info(folder)
    lm = load(folder, quantize=None)
    use_cpu_attention(lm.model)  # inference only; quantize=None leaves the weights exact
    model = build_task_model(info, lm.model)
    if model is not lm.model:
        state = {k.removeprefix("head."): v for k, v in
                 load_file(str(folder / "head.safetensors")).items()}
        model.head.load_state_dict(state)
    return model.eval(), lm.tokenizer, info


def build_task_model(info: TaskInfo, backbone: nn.Module) -> nn.Module:
    """The task model of `info.task` around `backbone` (a fresh head)."""
    return get_task(info.task).build_model(info, backbone)
