"""Atomic training checkpoints: safetensors for tensors, JSON for everything else.

A checkpoint is a folder `step-00000100/` holding

    model.safetensors      weights (tied tensors stored once)
    optimizer.safetensors  optimizer state tensors, by parameter index
    optimizer.json         optimizer hyper-parameters (param_groups) and scalar state
    trainer_state.json     step, data position, RNG state, elapsed time
    config.json            the run's config; tokenizer files beside it
    manifest.json          sha256 and size of every file above, written last

It is written into `.tmp-...` and renamed into place, so a reader sees either a
complete folder or none; `manifest.json` catches a folder damaged afterwards.
Nothing is pickled, so loading a checkpoint never runs code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from zenlm.errors import CheckpointError

_STEP_DIR = re.compile(r"^step-(\d{8})$")
MANIFEST = "manifest.json"


def checkpoint_dir(root: Path, step: int) -> Path:
    """Folder of the checkpoint written after `step` optimizer steps."""
    return root / f"step-{step:08d}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, data: Any) -> None:
    """JSON with floats written exactly (repr round-trips)."""
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def save_checkpoint(
    root: str | Path,
    step: int,
    *,
    model: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
    extra: Callable[[Path], None] | None = None,
    keep_last: int = 3,
    model_state: dict[str, torch.Tensor] | None = None,
    optimizer_state: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint of `step` atomically, then prune old ones.

    Args:
        root: Folder of all checkpoints of a run.
        step: Optimizer steps done.
        model: The bare model (not a DDP wrapper).
        optimizer: Its optimizer.
        state: JSON-able trainer state (step, data position, RNG, ...).
        extra: Writes more files (config, tokenizer) into the folder being built.
        keep_last: Checkpoints to keep; the newest complete one is never deleted.
        model_state: Weights to write instead of `model`'s (gathered FSDP shards,
            tied duplicates already removed).
        optimizer_state: An optimizer state dict to write instead of `optimizer`'s.

    Returns:
        The finished folder.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir(root, step)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    if model_state is not None:
        save_file(model_state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    else:
        save_model(model, str(tmp / "model.safetensors"))
    if optimizer_state is None:
        optimizer_state = optimizer.state_dict()
    tensors, opt_json = _flatten_optimizer(optimizer_state)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    write_json(tmp / "optimizer.json", opt_json)
    write_json(tmp / "trainer_state.json", state)
    if extra is not None:
        extra(tmp)
    _write_manifest(tmp, step)
    if final.exists():  # a complete checkpoint of the same step (re-run): replace it
        _remove(final)
    tmp.rename(final)
    _fsync(root)
    prune(root, keep_last)
    return final


def _write_manifest(folder: Path, step: int) -> None:
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        _fsync(path)
        files[str(path.relative_to(folder))] = {"sha256": _sha256(path),
                                                "bytes": path.stat().st_size}
    write_json(folder / MANIFEST, {"step": step, "files": files})
    _fsync(folder / MANIFEST)
    _fsync(folder)


def is_complete(folder: Path) -> bool:
    """True when the manifest exists and every file it lists has its size and hash."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        for name, info in manifest["files"].items():
            path = folder / name
            if path.stat().st_size != info["bytes"] or _sha256(path) != info["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def list_checkpoints(root: str | Path) -> list[Path]:
    """Step folders under `root` (complete or not), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name))


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint under `root`, or None."""
    for folder in reversed(list_checkpoints(root)):
        if is_complete(folder):
            return folder
    return None


def prune(root: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` complete checkpoints, and leftovers of crashes.

    Incomplete step folders older than the newest complete one go too; a newer
    incomplete one cannot exist (folders appear by rename only when complete) unless it
    was damaged later, and it is left for a person to look at.
    """
    folders = list_checkpoints(root)
    complete = [f for f in folders if is_complete(f)]
    keep = set(complete[-max(keep_last, 1):])
    newest = complete[-1] if complete else None
    for folder in folders:
        if folder not in keep and newest is not None and folder.name < newest.name:
            _remove(folder)
    for leftover in root.glob(".tmp-*"):
        if not leftover.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(leftover, ignore_errors=True)
    for trash in root.glob(".trash-*"):
        shutil.rmtree(trash, ignore_errors=True)


def _remove(folder: Path) -> None:
    # Rename first (atomic): a crash mid-delete leaves `.trash-*`, never a half step folder.
    trash = folder.with_name(f".trash-{folder.name}-{os.getpid()}")
    folder.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def _flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer state dict as named tensors + JSON (param_groups and non-tensor state)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_checkpoint(
    folder: str | Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None
) -> dict[str, Any]:
    """Fill `model` (and `optimizer`) from a checkpoint folder; return trainer_state.json.

    Raises:
        CheckpointError: the folder is incomplete, or its tensors do not fit the model.
    """
    folder = Path(folder)
    if not is_complete(folder):
        raise CheckpointError(f"{folder}: incomplete or damaged checkpoint (manifest mismatch)")
    try:
        load_model(model, str(folder / "model.safetensors"), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{folder}: weights do not fit this model ({exc})") from exc
    if optimizer is not None:
        optimizer.load_state_dict(_unflatten_optimizer(folder))
    return json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))


def read_checkpoint(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any],
                                                  dict[str, Any]]:
    """(weights, optimizer state dict, trainer_state.json) of a checkpoint, as stored.

    Raises:
        CheckpointError: the folder is incomplete or damaged.
    """
    folder = Path(folder)
    if not is_complete(folder):
        raise CheckpointError(f"{folder}: incomplete or damaged checkpoint (manifest mismatch)")
    state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    return load_file(str(folder / "model.safetensors")), _unflatten_optimizer(folder), state


def _unflatten_optimizer(folder: Path) -> dict[str, Any]:
    meta = json.loads((folder / "optimizer.json").read_text(encoding="utf-8"))
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in load_file(str(folder / "optimizer.safetensors")).items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    for index, entry in meta["scalars"].items():
        state.setdefault(int(index), {}).update(entry)
    for group in meta["param_groups"]:
        if isinstance(group.get("betas"), list):  # JSON has no tuples; Adam's are tuples
            group["betas"] = tuple(group["betas"])
    return {"state": state, "param_groups": meta["param_groups"]}
