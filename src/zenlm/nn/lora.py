"""LoRA as a module swap: `apply_lora` replaces chosen nn.Linear layers by LoRALinear.

The model file never knows about it (as with quantization): a LoRALinear *is* an
nn.Linear with the same `weight` and `bias` (so state-dict names, tied weights and
Hugging Face saving are unchanged) plus a low-rank update `B @ A * alpha / rank`.
Adapters (the A and B matrices) save alone as safetensors with their settings in the
file's metadata.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from zenlm.errors import CheckpointError


@dataclass(frozen=True)
class LoRAConfig:
    """Where and how big the adapters are.

    Attributes:
        rank: Inner dimension r of B (out, r) @ A (r, in).
        alpha: The update is scaled by alpha / rank.
        dropout: Dropout on the adapter's input while training.
        target_modules: Last components of Linear module names to adapt (e.g. "q", "v"),
            or full dotted names.
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q", "k", "v", "o")


class LoRALinear(nn.Linear):
    """An nn.Linear plus a trainable low-rank update; its own weight and bias are frozen.

    Args:
        base: The Linear to adapt (its parameters are shared, not copied).
        rank: Inner dimension r.
        alpha: Scale numerator (scale = alpha / rank).
        dropout: Dropout on the adapter's input.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        nn.Module.__init__(self)  # keep base's tensors: no fresh nn.Linear allocation
        if rank <= 0:
            raise ValueError(f"LoRA rank must be positive, got {rank}")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        factory = {"dtype": base.weight.dtype, "device": base.weight.device}
        self.lora_a = nn.Parameter(torch.empty(rank, self.in_features, **factory))  # (r, in)
        self.lora_b = nn.Parameter(torch.zeros(self.out_features, rank, **factory))  # (out, r)
        # As in the LoRA paper: A random, B zero, so training starts at the base model.
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scale = alpha / rank
        self.lora_dropout = nn.Dropout(dropout)
        self.merged = False

    def delta(self) -> torch.Tensor:
        """The weight update (out, in) = scale * B @ A."""
        return (self.lora_b @ self.lora_a) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out): base output plus the low-rank path (unless merged)."""
        out = nn.functional.linear(x, self.weight, self.bias)
        if self.merged:
            return out
        update = self.lora_dropout(x) @ self.lora_a.t() @ self.lora_b.t()  # (..., out)
        return out + update * self.scale

    @torch.no_grad()
    def merge(self) -> None:
        """Add the update into `weight` (faster inference; forward no longer adds it)."""
        if not self.merged:
            self.weight += self.delta().to(self.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the update from `weight` again (to keep training the adapter)."""
        if self.merged:
            self.weight -= self.delta().to(self.weight.dtype)
            self.merged = False


def apply_lora(
    model: nn.Module,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    target_modules: Sequence[str] = ("q", "k", "v", "o"),
) -> list[str]:
    """Swap every targeted nn.Linear of `model` for a LoRALinear; freeze everything else.

    Only the adapters of `model` are left trainable; a task head outside `model`
    (e.g. a classifier around this backbone) keeps its own requires_grad.

    Returns:
        Names of the adapted modules.

    Raises:
        ValueError: no Linear matches `target_modules`, or a target shares its weight
            (a tied output head: merging would change the embedding too).
    """
    targets = set(target_modules)
    linears = [name for name, module in model.named_modules() if type(module) is nn.Linear]
    names = [n for n in linears if n in targets or n.rsplit(".", 1)[-1] in targets]
    if not names:
        raise ValueError(
            f"no nn.Linear named {sorted(targets)} in the model; its Linear layers are "
            f"named {sorted({n.rsplit('.', 1)[-1] for n in linears})}"
        )
    shared = _shared_weights(model)
    for param in model.parameters():
        param.requires_grad_(False)
    for name in names:
        linear = model.get_submodule(name)
        if id(linear.weight) in shared:
            raise ValueError(f"{name}.weight is tied to another module; do not adapt it")
        lora = LoRALinear(linear, rank, alpha, dropout).train(linear.training)  # keep eval mode
        _set_submodule(model, name, lora)
    model.lora_config = LoRAConfig(rank, alpha, dropout, tuple(target_modules))  # type: ignore[attr-defined]
    return names


def _shared_weights(model: nn.Module) -> set[int]:
    seen: dict[int, int] = {}
    for module in model.modules():
        for param in module.parameters(recurse=False):
            seen[id(param)] = seen.get(id(param), 0) + 1
    return {key for key, count in seen.items() if count > 1}


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """The adapted layers of `model`, by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(model: nn.Module) -> None:
    """Merge every adapter into its weight."""
    for layer in lora_layers(model).values():
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    """Undo `merge_lora`."""
    for layer in lora_layers(model).values():
        layer.unmerge()


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters alone: {"<module>.lora_a": (r, in), "<module>.lora_b": (out, r)}."""
    out = {}
    for name, layer in lora_layers(model).items():
        out[f"{name}.lora_a"] = layer.lora_a.detach().contiguous()
        out[f"{name}.lora_b"] = layer.lora_b.detach().contiguous()
    return out


def save_adapters(model: nn.Module, path: str | Path) -> Path:
    """Write the adapters (not the base weights) as one safetensors file with their config."""
    config = getattr(model, "lora_config", None)
    if config is None or not lora_layers(model):
        raise ValueError("the model has no LoRA adapters; call apply_lora first")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": "pt", "zenlm_lora": json.dumps(asdict(config))}
    save_file(adapter_state(model), str(path), metadata=meta)
    return path


def load_adapters(model: nn.Module, path: str | Path) -> LoRAConfig:
    """Apply LoRA as the file describes (if not applied yet) and load its adapters.

    Raises:
        CheckpointError: not a zenlm adapter file, or its tensors do not fit the model.
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises several types; name the file
        raise CheckpointError(f"{path}: cannot read safetensors ({exc})") from exc
    if "zenlm_lora" not in meta:
        raise CheckpointError(f"{path}: no zenlm_lora metadata; not a zenlm adapter file")
    settings = json.loads(meta["zenlm_lora"])
    config = LoRAConfig(**{**settings, "target_modules": tuple(settings["target_modules"])})
    if not lora_layers(model):
        apply_lora(model, config.rank, config.alpha, config.dropout, config.target_modules)
    expected = adapter_state(model)
    if set(expected) != set(tensors):
        missing = sorted(set(expected) - set(tensors))
        extra = sorted(set(tensors) - set(expected))
        raise CheckpointError(
            f"{path}: adapters do not fit: missing {missing[:4]}, extra {extra[:4]}"
        )
    for name, layer in lora_layers(model).items():
        for part in ("lora_a", "lora_b"):
            tensor = tensors[f"{name}.{part}"]
            target = getattr(layer, part)
            if tensor.shape != target.shape:
                raise CheckpointError(
                    f"{path}: {name}.{part} has shape {tuple(tensor.shape)}, "
                    f"the model needs {tuple(target.shape)}"
                )
            with torch.no_grad():
                target.copy_(tensor)
    return config
