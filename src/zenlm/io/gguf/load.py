"""`read_gguf`: a GGUF file in Hugging Face form (config.json dict, state dict, tokenizer).

The tensors a file must hold, and their shapes, are not a table of their own: they
are the built model's (`build_skeleton`, on the meta device, from the config the
file describes), named the Hugging Face way by io/names.py and the llama.cpp way by
the family's rules (families.py). Every name, type and shape is checked before any
tensor is decoded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zenlm.config import from_hf_config
from zenlm.errors import CheckpointError, UnsupportedModelError
from zenlm.io.gguf.families import Family, Layout, family_of
from zenlm.io.gguf.quants import READABLE, SUPPORTED_TENSOR_TYPES
from zenlm.io.gguf.reader import GGUFFile, GGUFTensorInfo
from zenlm.io.gguf.tokenizer import build_tokenizer
from zenlm.io.hf import convert_to_hf
from zenlm.models import build_skeleton
from zenlm.tokenizer import Tokenizer

__all__ = ["GGUFCheckpoint", "GGUFModelFile", "open_gguf", "read_gguf"]


@dataclass
class GGUFCheckpoint:
    """A GGUF file in Hugging Face form.

    Attributes:
        hf_config: What a transformers config.json would hold for this model.
        state_dict: Tensors under transformers' names, in transformers' layouts. A
            tied model has no `lm_head.weight` (and `tie_word_embeddings` is True).
        tokenizer: The tokenizer described by the file's `tokenizer.*` metadata.
        metadata: The file's plain (non-array) key/values, for information.
    """

    hf_config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    tokenizer: Tokenizer
    metadata: dict[str, Any]


@dataclass(frozen=True)
class _Planned:
    """One tensor to read: where it is, its transformers name, and the layout change."""

    info: GGUFTensorInfo
    hf_name: str
    layout: Layout


@dataclass
class GGUFModelFile:
    """A GGUF file opened and checked, its tensors decoded one at a time on demand.

    Attributes:
        hf_config: What a transformers config.json would hold for this model.
        tokenizer: The tokenizer described by the file's `tokenizer.*` metadata.
        metadata: The file's plain (non-array) key/values, for information.
    """

    hf_config: dict[str, Any]
    tokenizer: Tokenizer
    metadata: dict[str, Any]
    _file: GGUFFile
    _plan: list[_Planned]
    _dtype: torch.dtype

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(transformers name, tensor), each decoded when it is asked for.

        A consumer that drops each tensor once used (`model_from_hf_tensors` with
        `prepare_part`) holds one part's float weights at a time, not the whole model's.
        The order makes that so whatever the file's: the tensors outside the blocks
        (the embedding and the head, the biggest) first, while little else is held,
        then block by block. Some writers group a file by tensor kind across blocks
        (every `attn_norm`, then every `attn_q`, ...): read in file order, no block of
        such a 1.1B file was whole until most of the model was read, a 3.2 GB peak.
        """
        for item in sorted(self._plan, key=_outside_blocks_first):
            # no local keeps the tensor: this frame must not hold it past the consumer
            yield item.hf_name, self._decode(item)

    def _decode(self, item: _Planned) -> torch.Tensor:
        values, bits = self._file.values(item.info, self._dtype)
        values = item.layout.to_hf(values, self.hf_config)
        tensor = _to_torch(self._file, values, bits, self._dtype)
        del values
        self._file.release(item.info)  # its values are copied out
        return tensor


def open_gguf(path: str | Path, dtype: torch.dtype = torch.float32) -> GGUFModelFile:
    """Open a GGUF file (llama or gpt2 architecture) and check it; decode nothing yet.

    Args:
        path: The .gguf file.
        dtype: Floating dtype of the tensors `tensors()` gives; quantized blocks are
            dequantized in float32 first.

    Raises:
        CheckpointError: if the file is missing, truncated, not GGUF, has a corrupt
            header, lacks a tensor, or holds a tensor whose shape does not match the
            hyperparameters.
        UnsupportedModelError: if the architecture, a tensor type, a tokenizer model
            or a rope scaling scheme is one zenlm does not implement.
    """
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    file = GGUFFile.open(Path(path))
    family = family_of(file.header)
    hf_config = family.read_config(file)
    plan = _plan(file, family, hf_config)  # every check before any tensor is decoded
    tokenizer = build_tokenizer(file.header)
    metadata = {k: v for k, v in file.header.metadata.items() if not isinstance(v, list)}
    return GGUFModelFile(hf_config, tokenizer, metadata, file, plan, dtype)


def read_gguf(path: str | Path, dtype: torch.dtype = torch.float32) -> GGUFCheckpoint:
    """Load a GGUF file (llama or gpt2 architecture) into Hugging Face form.

    `open_gguf` with every tensor decoded (the model's whole float state dict in memory).

    Args:
        path: The .gguf file.
        dtype: Floating dtype of the returned tensors; quantized blocks are
            dequantized in float32 first.

    Returns:
        The config, state dict, tokenizer and plain metadata of the model.

    Raises:
        CheckpointError, UnsupportedModelError: as `open_gguf`.
    """
    opened = open_gguf(path, dtype)
    return GGUFCheckpoint(opened.hf_config, dict(opened.tensors()), opened.tokenizer,
                          opened.metadata)


def _outside_blocks_first(item: _Planned) -> int:
    """Sort key: -1 for a tensor outside the blocks, N for block N's (`blk.N.*`)."""
    parts = item.info.name.split(".")
    return int(parts[1]) if parts[0] == "blk" else -1


def _expected(family: Family, hf_config: dict[str, Any], source: Path) -> dict[str, Any]:
    """Every tensor of the model `hf_config` describes, from its meta-device skeleton.

    Returns:
        GGUF name -> (transformers name, transformers shape, layout); a tied model has
        no output matrix.
    """
    try:
        config = from_hf_config(hf_config)
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(f"{source}: {exc}") from None
    except ValueError as exc:  # ModelConfig's own checks
        raise CheckpointError(f"{source}: the hyperparameters describe no valid model ({exc})"
                              ) from None
    expected = {}
    for hf_name, tensor in convert_to_hf(build_skeleton(config)).items():
        found = family.to_gguf(hf_name)
        if found is None:  # a zenlm family the GGUF table lacks: a bug, not bad input
            raise UnsupportedModelError(f"no GGUF name for {family.arch} tensor {hf_name}")
        gguf_name, layout = found
        expected[gguf_name] = (hf_name, tuple(tensor.shape), layout)
    return expected


def _plan(file: GGUFFile, family: Family, hf_config: dict[str, Any]) -> list[_Planned]:
    """The tensors to read, after checking their names, types and shapes."""
    h = file.header
    _check_block_count(file, hf_config)
    expected = _expected(family, hf_config, h.path)
    tied = hf_config["tie_word_embeddings"]
    plan = []
    for info in h.tensors.values():
        if info.name in family.ignored or (tied and info.name == "output.weight"):
            continue  # read into the config / a checked copy of the embedding
        if info.name not in expected:
            raise UnsupportedModelError(
                f"{h.path}: tensor {info.name!r} has no place in a transformers "
                f"{hf_config['model_type']} model with this config"
            )
        if info.ggml_type not in READABLE:
            raise UnsupportedModelError(
                f"{h.path}: tensor {info.name!r} is stored as {info.type_name}, which zenlm "
                f"cannot dequantize; supported: {', '.join(SUPPORTED_TENSOR_TYPES)}"
            )
        hf_name, shape, layout = expected[info.name]
        if info.shape != layout.gguf_shape(shape):
            stored = tuple(reversed(info.shape)) if layout.transposed else info.shape
            raise CheckpointError(
                f"{h.path}: tensor {info.name!r} ({hf_name}) has shape {stored}, but the "
                f"hyperparameters call for {shape}"
            )
        plan.append(_Planned(info, hf_name, layout))
    missing = [f"{hf} ({name})" for name, (hf, _, _) in expected.items()
               if name not in h.tensors]
    if missing:
        raise CheckpointError(
            f"{h.path}: {len(missing)} tensor(s) missing, e.g. {', '.join(missing[:3])}"
        )
    return plan


def _check_block_count(file: GGUFFile, hf_config: dict[str, Any]) -> None:
    """The metadata's block count must be the file's, before a skeleton of that depth is built."""
    n_layers = hf_config.get("num_hidden_layers", hf_config.get("n_layer"))
    blocks = {name.split(".")[1] for name in file.header.tensors if name.startswith("blk.")}
    if n_layers != len(blocks):
        raise CheckpointError(
            f"{file.header.path}: the metadata says {n_layers} blocks, but the file has "
            f"tensors for {len(blocks)} (blk.N.*)"
        )


def _to_torch(
    file: GGUFFile, values: np.ndarray, bits: torch.dtype, dtype: torch.dtype
) -> torch.Tensor:
    """Numpy values -> a torch tensor of `dtype` that owns its memory (not the file's)."""
    if np.may_share_memory(values, file.raw_all):
        values = values.copy()
    tensor = torch.from_numpy(np.ascontiguousarray(values))
    if bits == torch.bfloat16:
        tensor = tensor.view(torch.bfloat16)
    return tensor.to(dtype)
