"""FSDP (torch.distributed.fsdp.fully_shard, "FSDP2"): parameters sharded over the ranks.

Each Transformer block is one FSDP unit (gathered for its forward/backward, then freed);
the root unit holds the rest (embeddings, tied heads, final norm). Gradients are
reduce-scattered as averages, as DDP all-reduces them, so a 2-process run follows the
same loss curve as 1 process with twice the accumulation.

Checkpoints stay in the one format of `zenlm.train.checkpoint`: the full (unsharded)
weights and optimizer state are gathered to CPU on rank 0 and written there, with the
optimizer state indexed by parameter position as `torch.optim.Optimizer.state_dict`
indexes it. Resume, export and single-process loading therefore do not know FSDP existed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# torch.distributed.checkpoint and torch.distributed.fsdp are imported where they are
# used: they pull in sympy (~48 MB resident, ~1 s), and every `zenlm` command imports
# this module through the task registry, generation and serving included.

StateDict = dict[str, Any]


def shard_model(model: nn.Module) -> nn.Module:
    """Shard `model` in place: one FSDP unit per block (`model.blocks`), then the root."""
    from torch.distributed.fsdp import fully_shard

    for block in getattr(model, "blocks", []):
        fully_shard(block)
    fully_shard(model)
    return model


def tied_names(model: nn.Module) -> dict[str, str]:
    """Each state-dict name that shares its parameter with another -> the name kept on disk.

    The kept name is the first in sorted order, as safetensors' `save_model` keeps it.
    """
    groups: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(name)
    tied: dict[str, str] = {}
    for names in groups.values():
        keep = min(names)
        tied.update({name: keep for name in names if name != keep})
    return tied


def _param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Names of the optimizer's parameters in its own order (its state-dict indices)."""
    name_of = {id(p): name for name, p in model.named_parameters()}
    return [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]


def gather_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                 is_main: bool) -> tuple[StateDict, StateDict]:
    """Full weights and optimizer state on CPU (collective: every rank must call it).

    Returns:
        (weights without tied duplicates, optimizer state dict indexed by position) on
        the main process; empty dicts elsewhere.
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    gather = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=gather)
    optim = get_optimizer_state_dict(model, optimizer, options=gather)
    if not is_main:
        return {}, {}
    tied = tied_names(model)
    weights = {k: v.contiguous() for k, v in weights.items() if k not in tied}
    names = _param_names(model, optimizer)
    index = {name: i for i, name in enumerate(names)}
    state = {index[name]: entry for name, entry in optim["state"].items()}
    groups = [{**group, "params": [index[name] for name in group["params"]]}
              for group in optim["param_groups"]]
    return weights, {"state": state, "param_groups": groups}


def load_state(model: nn.Module, optimizer: torch.optim.Optimizer | None, weights: StateDict,
               optim: StateDict | None) -> None:
    """Fill a sharded model (and optimizer) from full state dicts every rank has read."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    weights = dict(weights)
    for name, keep in tied_names(model).items():
        weights.setdefault(name, weights[keep])
    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True))
    if optimizer is None or optim is None:
        return
    names = _param_names(model, optimizer)
    by_name = {"state": {names[int(i)]: entry for i, entry in optim["state"].items()},
               "param_groups": [{**group, "params": [names[int(i)] for i in group["params"]]}
                                for group in optim["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, by_name,
                             options=StateDictOptions(full_state_dict=True))


def full_norm(norm: torch.Tensor) -> torch.Tensor:
    """A gradient norm as a plain tensor (clip_grad_norm_ returns a DTensor under FSDP)."""
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm
