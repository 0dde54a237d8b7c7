"""One two-way table per llama.cpp architecture: GGUF names and layouts <-> transformers'.

A `TensorRule` pairs a llama.cpp tensor (gguf-py's `TENSOR_NAMES`, `{i}` for the block)
with its transformers tensor and the `Layout` change between them, for both `.weight`
and `.bias`. Reading a file walks the rules from GGUF to transformers, exporting walks
the same rules back (as io/names.py does for Hugging Face folders), so each family's
names, its Q/K permutation and its transposes are written down once.

What llama.cpp's converter (convert_hf_to_gguf.py) changes, and a `Layout` undoes:

- llama Q and K rows are permuted so that RoPE rotates adjacent pairs; transformers
  rotates the two halves of each head (`rotate_half`);
- GPT-2's Conv1D weights are stored transposed; transformers keeps them (in, out).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
from gguf.constants import MODEL_TENSOR, TENSOR_NAMES

from zenlm.errors import UnsupportedModelError
from zenlm.io.gguf.hparams import gpt2_config, llama_config, write_llama_config
from zenlm.io.gguf.reader import GGUFFile, GGUFHeader

__all__ = ["FAMILIES", "Family", "Layout", "TensorRule", "family_of", "permute_qk"]

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def permute_qk(weight: Array, n_heads: int, *, inverse: bool = False) -> Array:
    """convert_hf_to_gguf.py's `permute` of Q/K rows, or (`inverse`) its undoing.

    Within each head, transformers keeps the two halves of the rotated pairs apart
    (row j * head_dim/2 + i); llama.cpp interleaves them (row 2i + j).

    Args:
        weight: (n_heads * head_dim, ...) rows of a q_proj or k_proj weight or bias,
            numpy or torch.
        n_heads: Heads of that projection (key/value heads for K).
        inverse: False: transformers -> llama.cpp; True: llama.cpp -> transformers.

    Returns:
        A new contiguous array of the same shape and kind.
    """
    half = weight.shape[0] // n_heads // 2
    split = (half, 2) if inverse else (2, half)
    heads = weight.reshape(n_heads, *split, *weight.shape[1:])  # (H, 2, D/2, ..) or (H, D/2, 2, ..)
    return heads.swapaxes(1, 2).reshape(weight.shape)


@dataclass(frozen=True)
class Layout:
    """How a tensor's GGUF layout differs from its transformers layout.

    Attributes:
        transposed: Stored transposed (GPT-2's Conv1D weights).
        rope_heads: For Q/K rows llama.cpp permuted: the config key giving their head count.
    """

    transposed: bool = False
    rope_heads: str | None = None

    def to_hf(self, values: np.ndarray, config: dict[str, Any]) -> np.ndarray:
        """GGUF-layout values (torch-order shape) -> transformers layout."""
        if self.transposed and values.ndim == 2:
            return np.ascontiguousarray(values.T)
        if self.rope_heads is not None:
            return permute_qk(values, config[self.rope_heads], inverse=True)
        return values

    def to_gguf(self, values: np.ndarray, config: dict[str, Any]) -> np.ndarray:
        """transformers-layout values -> GGUF layout (torch-order shape)."""
        if self.transposed and values.ndim == 2:
            return np.ascontiguousarray(values.T)
        if self.rope_heads is not None:
            return permute_qk(values, config[self.rope_heads])
        return values

    def gguf_shape(self, hf_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape (torch order) a tensor of `hf_shape` has in the file."""
        return tuple(reversed(hf_shape)) if self.transposed else hf_shape


SAME = Layout()
TRANSPOSED = Layout(transposed=True)


@dataclass(frozen=True)
class TensorRule:
    """`gguf` <-> `hf` name stems (`{i}`: the block), each with `.weight` and `.bias`."""

    gguf: str
    hf: str
    layout: Layout = SAME


def _rule(tensor: MODEL_TENSOR, hf: str, layout: Layout = SAME) -> TensorRule:
    return TensorRule(TENSOR_NAMES[tensor].replace("{bid}", "{i}"), hf, layout)


@dataclass(frozen=True)
class Family:
    """A llama.cpp architecture and the transformers family it maps to.

    Attributes:
        arch: `general.architecture`, e.g. "llama".
        tensors: The name table.
        read_config: The transformers config.json dict a file describes.
        write_config: Writes a config.json dict as this architecture's metadata (None:
            export not supported).
        ignored: GGUF tensors read into the config instead (Llama 3's rope factors).
    """

    arch: str
    tensors: tuple[TensorRule, ...]
    read_config: Callable[[GGUFFile], dict[str, Any]]
    write_config: Callable[[Any, dict[str, Any]], None] | None = None
    ignored: frozenset[str] = frozenset()
    _by_gguf: dict[str, TensorRule] = field(init=False, repr=False, compare=False)
    _by_hf: dict[str, TensorRule] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_gguf", {r.gguf: r for r in self.tensors})
        object.__setattr__(self, "_by_hf", {r.hf: r for r in self.tensors})

    def to_hf(self, gguf_name: str) -> tuple[str, Layout] | None:
        """`blk.3.attn_q.weight` -> (`model.layers.3.self_attn.q_proj.weight`, its layout)."""
        return _walk(gguf_name, _GGUF_BLOCK, "blk.{i}.", self._by_gguf, "hf")

    def to_gguf(self, hf_name: str) -> tuple[str, Layout] | None:
        """The same rule walked back: transformers name -> (GGUF name, layout)."""
        return _walk(hf_name, _HF_BLOCK, ".{i}.", self._by_hf, "gguf")


_GGUF_BLOCK = re.compile(r"^blk\.(\d+)\.")
_HF_BLOCK = re.compile(r"\.(\d+)\.")


def _walk(
    name: str, block: re.Pattern, generic: str, table: dict[str, TensorRule], side: str
) -> tuple[str, Layout] | None:
    stem, _, kind = name.rpartition(".")
    if kind not in ("weight", "bias"):
        return None
    match = block.search(stem)
    key = stem if match is None else stem[: match.start()] + generic + stem[match.end():]
    rule = table.get(key)
    if rule is None:
        return None
    other = getattr(rule, side)
    return f"{other.replace('{i}', match[1]) if match else other}.{kind}", rule.layout


_T = MODEL_TENSOR
_LLAMA_BLOCK = "model.layers.{i}"
_ROPE_Q = Layout(rope_heads="num_attention_heads")
_ROPE_K = Layout(rope_heads="num_key_value_heads")
LLAMA = Family(
    arch="llama",
    tensors=(
        _rule(_T.TOKEN_EMBD, "model.embed_tokens"),
        _rule(_T.OUTPUT_NORM, "model.norm"),
        _rule(_T.OUTPUT, "lm_head"),
        _rule(_T.ATTN_NORM, f"{_LLAMA_BLOCK}.input_layernorm"),
        _rule(_T.FFN_NORM, f"{_LLAMA_BLOCK}.post_attention_layernorm"),
        _rule(_T.ATTN_Q, f"{_LLAMA_BLOCK}.self_attn.q_proj", _ROPE_Q),
        _rule(_T.ATTN_K, f"{_LLAMA_BLOCK}.self_attn.k_proj", _ROPE_K),
        _rule(_T.ATTN_V, f"{_LLAMA_BLOCK}.self_attn.v_proj"),
        _rule(_T.ATTN_OUT, f"{_LLAMA_BLOCK}.self_attn.o_proj"),
        _rule(_T.FFN_GATE, f"{_LLAMA_BLOCK}.mlp.gate_proj"),
        _rule(_T.FFN_UP, f"{_LLAMA_BLOCK}.mlp.up_proj"),
        _rule(_T.FFN_DOWN, f"{_LLAMA_BLOCK}.mlp.down_proj"),
    ),
    read_config=llama_config,
    write_config=write_llama_config,
    ignored=frozenset({"rope_freqs.weight"}),
)

_GPT2_BLOCK = "transformer.h.{i}"
GPT2 = Family(
    arch="gpt2",
    tensors=(
        _rule(_T.TOKEN_EMBD, "transformer.wte"),
        _rule(_T.POS_EMBD, "transformer.wpe"),
        _rule(_T.OUTPUT_NORM, "transformer.ln_f"),
        _rule(_T.OUTPUT, "lm_head"),
        _rule(_T.ATTN_NORM, f"{_GPT2_BLOCK}.ln_1"),
        _rule(_T.ATTN_QKV, f"{_GPT2_BLOCK}.attn.c_attn", TRANSPOSED),
        _rule(_T.ATTN_OUT, f"{_GPT2_BLOCK}.attn.c_proj", TRANSPOSED),
        _rule(_T.FFN_NORM, f"{_GPT2_BLOCK}.ln_2"),
        _rule(_T.FFN_UP, f"{_GPT2_BLOCK}.mlp.c_fc", TRANSPOSED),
        _rule(_T.FFN_DOWN, f"{_GPT2_BLOCK}.mlp.c_proj", TRANSPOSED),
    ),
    read_config=gpt2_config,
)

FAMILIES: dict[str, Family] = {family.arch: family for family in (LLAMA, GPT2)}
SUPPORTED_ARCHITECTURES = tuple(sorted(FAMILIES))
"""Values of `general.architecture` zenlm can load."""


def family_of(header: GGUFHeader) -> Family:
    """The family of the file's `general.architecture` (UnsupportedModelError if none)."""
    name = header.architecture
    if name not in FAMILIES:
        raise UnsupportedModelError(
            f"{header.path}: GGUF architecture {name!r} is not supported; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    return FAMILIES[name]
