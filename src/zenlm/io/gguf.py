"""Read GGUF files (llama.cpp's format) into Hugging Face form.

A GGUF file holds a model's hyperparameters and tokenizer as metadata, under
llama.cpp's key names, and its tensors under llama.cpp's names and layouts, often
quantized in blocks. `read_gguf` turns all of that into what a Hugging Face model
folder would hold: a `config.json` dict, a state dict with transformers' names and
layouts, and a tokenizer.

What llama.cpp's converter (convert_hf_to_gguf.py) changed, and is undone here:

- names: `blk.N.attn_q.weight` -> `model.layers.N.self_attn.q_proj.weight`, ...
- llama Q and K rows are permuted so that RoPE rotates adjacent pairs; transformers
  rotates the two halves of each head (`rotate_half`), so the rows are put back.
- GPT-2's Conv1D weights are stored transposed; transformers keeps them (in, out).
- GPT-2's output matrix is written as a copy of the embeddings; the model is tied.

The header is parsed here with `struct` over a memory map instead of with
`gguf.GGUFReader`: the reader builds one numpy view per element of every metadata
array, which takes ~3 s on SmolLM2's 49k-token vocabulary and merges (this parser:
0.04 s). The tensor types, block sizes and value types are still gguf's own tables,
and the tests check this parser against `GGUFReader`. Blocks are dequantized by
whole-tensor numpy code written from ggml's block layouts: the same float32 values,
bit for bit, as `gguf.quants.dequantize`, 1.6x (Q4_1) to 3.5x (Q8_0) less CPU time.
"""

from __future__ import annotations

import math
import mmap
import re
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers
import torch
from gguf.constants import (
    GGML_QUANT_SIZES,
    GGUF_DEFAULT_ALIGNMENT,
    GGMLQuantizationType,
    GGUFValueType,
    TokenType,
)
from tokenizers import AddedToken, Regex, decoders, pre_tokenizers, processors
from tokenizers.models import BPE

from zenlm.errors import CheckpointError, UnsupportedModelError
from zenlm.tokenizer import Tokenizer

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "SUPPORTED_TENSOR_TYPES",
    "SUPPORTED_TOKENIZER_MODELS",
    "GGUFCheckpoint",
    "GGUFHeader",
    "GGUFTensorInfo",
    "dequantize",
    "read_gguf",
    "read_gguf_header",
]

SUPPORTED_ARCHITECTURES = ("gpt2", "llama")
"""Values of `general.architecture` that `read_gguf` can load."""

_Q = GGMLQuantizationType
SUPPORTED_TENSOR_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K")
"""ggml tensor types `read_gguf` can read (by `GGMLQuantizationType` name)."""


# =================================================================== public types
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
class GGUFTensorInfo:
    """Where one tensor lives in a GGUF file and how it is stored.

    Attributes:
        name: llama.cpp's name, e.g. `blk.0.attn_q.weight`.
        shape: In torch order (slowest dimension first); a ggml row is the last one.
        ggml_type: The ggml type id (`GGMLQuantizationType`), possibly one gguf-py
            does not know.
        offset: Absolute byte offset of the tensor's data in the file.
        nbytes: Size of the data in bytes; -1 when the type is unknown.
    """

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int
    nbytes: int

    @property
    def type_name(self) -> str:
        """The type's ggml name, e.g. `Q4_K`, or `type 99` for an unknown id."""
        return _type_name(self.ggml_type)


@dataclass
class GGUFHeader:
    """Everything in a GGUF file but the tensor data.

    Attributes:
        path: The file.
        version: GGUF format version (2 or 3).
        metadata: Every key/value; arrays as Python lists.
        tensors: Tensor table, in file order, by name.
        file_size: Size of the file in bytes.
    """

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensorInfo] = field(default_factory=dict)
    file_size: int = 0

    @property
    def architecture(self) -> str:
        """The `general.architecture` value, e.g. `llama`."""
        value = self.metadata.get("general.architecture")
        if not isinstance(value, str):
            raise CheckpointError(f"{self.path}: metadata has no string 'general.architecture'")
        return value


# =================================================================== entry points
def read_gguf(path: str | Path, dtype: torch.dtype = torch.float32) -> GGUFCheckpoint:
    """Load a GGUF file (llama or gpt2 architecture) into Hugging Face form.

    Args:
        path: The .gguf file.
        dtype: Floating dtype of the returned tensors; quantized blocks are
            dequantized in float32 first.

    Returns:
        The config, state dict, tokenizer and plain metadata of the model.

    Raises:
        CheckpointError: if the file is missing, truncated, not GGUF, has a corrupt
            header, lacks a tensor, or holds a tensor whose shape does not match the
            hyperparameters.
        UnsupportedModelError: if the architecture, a tensor type, a tokenizer model
            or a rope scaling scheme is one zenlm does not implement.
    """
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    file = _GGUFFile.open(Path(path))
    arch = _architecture(file.header)
    hf_config = arch.config(file)
    plan = _plan(file, arch, hf_config)  # every check before any tensor is decoded
    tokenizer = _build_tokenizer(file.header)
    state_dict = {}
    for hf_name, info in plan.items():
        values, bits = file.values(info, dtype)
        values = _to_hf_layout(arch, hf_name, values, hf_config)
        state_dict[hf_name] = _to_torch(file, values, bits, dtype)
    return GGUFCheckpoint(hf_config, state_dict, tokenizer, _plain_metadata(file.header))


def read_gguf_header(path: str | Path) -> GGUFHeader:
    """Parse a GGUF file's metadata and tensor table without reading tensor data.

    Raises:
        CheckpointError: if the file is missing, not GGUF, truncated or corrupt.
    """
    return _GGUFFile.open(Path(path)).header


def dequantize(
    raw: torch.Tensor | np.ndarray, ggml_type: int, shape: Sequence[int]
) -> torch.Tensor:
    """Decode one tensor's bytes, as stored in a GGUF file, to float32.

    Args:
        raw: The tensor's bytes (any shape and dtype; only the bytes count).
        ggml_type: Its ggml type id; one of `SUPPORTED_TENSOR_TYPES`.
        shape: The tensor's shape in torch order; the last dimension is a row.

    Returns:
        float32 tensor of `shape` (the same values as `gguf.quants.dequantize`).

    Raises:
        UnsupportedModelError: for a type not in `SUPPORTED_TENSOR_TYPES`.
        ValueError: if the bytes do not fit `shape`.
    """
    if isinstance(raw, torch.Tensor):
        raw = raw.detach().cpu().contiguous().view(torch.uint8).numpy()
    data = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
    values = _decode(data, int(ggml_type), tuple(shape), to_float32=True)
    return torch.from_numpy(values.copy() if np.may_share_memory(values, data) else values)


# =================================================================== dequantization
# Decoding is numpy, on one thread, on purpose: it is memory-bound, and torch's per-op
# thread hand-offs made a load 3-10x slower on a busy machine (measured with 2 cores).
#
# One function per ggml block type, (n_blocks, block_bytes) uint8 -> (n_blocks, block_elems)
# float32. Each follows ggml's block struct (ggml-common.h) and computes in the same order
# as gguf-py's numpy code, so that results agree bit for bit.
_F32 = np.float32


def _f16_at(blocks: np.ndarray, start: int) -> np.ndarray:
    """The fp16 scale stored at byte `start` of every block, as (n_blocks, 1) float32."""
    return blocks[:, start : start + 2].copy().view("<f2").astype(_F32)


def _nibbles(packed: np.ndarray) -> np.ndarray:
    """(..., n) bytes -> (..., 2n) float32: all low nibbles first, then all high nibbles."""
    n = packed.shape[-1]
    out = np.empty((*packed.shape[:-1], 2 * n), dtype=_F32)
    np.bitwise_and(packed, 0x0F, out=out[..., :n], casting="unsafe")
    np.right_shift(packed, 4, out=out[..., n:], casting="unsafe")
    return out


def _decode_q8_0(blocks: np.ndarray) -> np.ndarray:
    # block_q8_0: fp16 d, int8 qs[32]; x = qs * d
    q = blocks[:, 2:].view(np.int8).astype(_F32)
    q *= _f16_at(blocks, 0)
    return q


def _decode_q4_0(blocks: np.ndarray) -> np.ndarray:
    # block_q4_0: fp16 d, qs[16] two 4-bit values per byte; x = d * (q - 8)
    q = _nibbles(blocks[:, 2:])
    q -= 8
    q *= _f16_at(blocks, 0)
    return q


def _decode_q4_1(blocks: np.ndarray) -> np.ndarray:
    # block_q4_1: fp16 d, fp16 m, qs[16]; x = d * q + m
    q = _nibbles(blocks[:, 4:])
    q *= _f16_at(blocks, 0)
    q += _f16_at(blocks, 2)
    return q


def _k_scales(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K's 12 bytes of packed 6-bit scales and mins -> two (n_blocks, 8) uint8 arrays."""
    # bytes 0-3: scale 0-3 (low 6 bits), high 2 bits of scale 4-7
    # bytes 4-7: min 0-3 (low 6 bits),   high 2 bits of min 4-7
    # bytes 8-11: low 4 bits of scale 4-7 | low 4 bits of min 4-7 << 4
    s = scales.reshape(-1, 3, 4)
    d, m, md = s[:, 0], s[:, 1], s[:, 2]
    sc = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return sc, mn


def _decode_q4_k(blocks: np.ndarray) -> np.ndarray:
    # block_q4_K: fp16 d, fp16 dmin, scales[12], qs[128]; 8 sub-blocks of 32:
    # x = d * sc[j] * q - dmin * m[j]
    n = blocks.shape[0]
    sc, mn = _k_scales(blocks[:, 4:16])
    scale = (_f16_at(blocks, 0) * sc.astype(_F32)).reshape(n, 8, 1)
    shift = (_f16_at(blocks, 2) * mn.astype(_F32)).reshape(n, 8, 1)
    # each 32 bytes of qs hold two sub-blocks: low nibbles, then high nibbles
    q = _nibbles(blocks[:, 16:].reshape(n, 4, 32)).reshape(n, 8, 32)
    q *= scale
    q -= shift
    return q.reshape(n, 256)


_Q6_SHIFTS = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)


def _decode_q6_k(blocks: np.ndarray) -> np.ndarray:
    # block_q6_K: ql[128] low 4 bits, qh[64] high 2 bits, int8 scales[16], fp16 d;
    # 16 sub-blocks of 16: x = d * scales[j] * (q - 32)
    n = blocks.shape[0]
    ql = blocks[:, :128].reshape(n, 2, 64)
    qh = blocks[:, 128:192].reshape(n, 2, 1, 32)
    # per half: ql[0:32] & 15, ql[32:64] & 15, ql[0:32] >> 4, ql[32:64] >> 4 ...
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=-1).reshape(n, 2, 4, 32)
    # ... with bits 0-1, 2-3, 4-5, 6-7 of qh on top
    high = (qh >> _Q6_SHIFTS) & 0x03
    q = ((low | (high << 4)).view(np.int8) - np.int8(32)).astype(_F32).reshape(n, 16, 16)
    scales = blocks[:, 192:208].view(np.int8).astype(_F32)
    q *= (_f16_at(blocks, 208) * scales).reshape(n, 16, 1)
    return q.reshape(n, 256)


_DECODERS: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    _Q.Q8_0: _decode_q8_0,
    _Q.Q4_0: _decode_q4_0,
    _Q.Q4_1: _decode_q4_1,
    _Q.Q4_K: _decode_q4_k,
    _Q.Q6_K: _decode_q6_k,
}
# float types: how numpy holds their bits (no bfloat16 in numpy), and torch's dtype
_FLOATS: dict[int, tuple[str, torch.dtype]] = {
    _Q.F32: ("<f4", torch.float32),
    _Q.F16: ("<f2", torch.float16),
    _Q.BF16: ("<u2", torch.bfloat16),
}
_READABLE = {*_DECODERS, *_FLOATS}


def _decode(data: np.ndarray, ggml_type: int, shape: tuple[int, ...], *, to_float32: bool,
            ) -> np.ndarray:
    """A tensor's bytes -> numpy values of `shape` (may alias `data`).

    Quantized types come back float32. Float types come back float32 if `to_float32`,
    else in their own bits (BF16 as uint16, for torch to view as bfloat16).
    """
    if ggml_type not in _READABLE:
        raise UnsupportedModelError(
            f"cannot dequantize ggml type {_type_name(ggml_type)}; "
            f"supported: {', '.join(SUPPORTED_TENSOR_TYPES)}"
        )
    block_elems, block_bytes = GGML_QUANT_SIZES[_Q(ggml_type)]
    if shape[-1] % block_elems or data.size != math.prod(shape) // block_elems * block_bytes:
        raise ValueError(
            f"{data.size} bytes of {_type_name(ggml_type)} cannot hold a tensor of shape {shape}"
        )
    if ggml_type in _DECODERS:
        return _DECODERS[ggml_type](data.reshape(-1, block_bytes)).reshape(shape)
    values = data.view(_FLOATS[ggml_type][0]).reshape(shape)
    if not to_float32 or ggml_type == _Q.F32:
        return values
    if ggml_type == _Q.BF16:  # bfloat16 is the top half of a float32
        return (values.astype(np.uint32) << 16).view(_F32)
    return values.astype(_F32)


def _type_name(ggml_type: int) -> str:
    try:
        return _Q(ggml_type).name
    except ValueError:
        return f"type {ggml_type}"


# =================================================================== header parsing
class _Corrupt(Exception):
    """A fault in the file's structure; `_GGUFFile.open` adds the path and re-raises."""


_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_V = GGUFValueType
_SCALARS: dict[int, struct.Struct] = {
    _V.UINT8: struct.Struct("<B"),
    _V.INT8: struct.Struct("<b"),
    _V.UINT16: struct.Struct("<H"),
    _V.INT16: struct.Struct("<h"),
    _V.UINT32: _U32,
    _V.INT32: struct.Struct("<i"),
    _V.FLOAT32: struct.Struct("<f"),
    _V.BOOL: struct.Struct("<?"),
    _V.UINT64: _U64,
    _V.INT64: struct.Struct("<q"),
    _V.FLOAT64: struct.Struct("<d"),
}
_NUMPY_TYPES: dict[int, str] = {
    _V.UINT8: "<u1", _V.INT8: "<i1", _V.UINT16: "<u2", _V.INT16: "<i2", _V.UINT32: "<u4",
    _V.INT32: "<i4", _V.FLOAT32: "<f4", _V.BOOL: "<u1", _V.UINT64: "<u8", _V.INT64: "<i8",
    _V.FLOAT64: "<f8",
}
_MAX_DIMS = 4  # GGML_MAX_DIMS


class _Cursor:
    """Bounds-checked little-endian reads over the file's bytes."""

    def __init__(self, buf: mmap.mmap, size: int) -> None:
        self.buf, self.size, self.pos = buf, size, 0

    def take(self, nbytes: int, what: str) -> int:
        """Advance past `nbytes`; return where they start."""
        start = self.pos
        if nbytes < 0 or start + nbytes > self.size:
            raise _Corrupt(
                f"truncated or corrupt: {what} at byte {start} needs {nbytes} bytes, "
                f"but the file ends at byte {self.size}"
            )
        self.pos = start + nbytes
        return start

    def scalar(self, layout: struct.Struct, what: str) -> Any:
        return layout.unpack_from(self.buf, self.take(layout.size, what))[0]

    def string(self, what: str) -> str:
        length = self.scalar(_U64, f"length of {what}")
        start = self.take(length, what)
        try:
            return self.buf[start : start + length].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Corrupt(f"corrupt header: {what} at byte {start} is not UTF-8") from exc

    def value(self, value_type: int, key: str) -> Any:
        if value_type == _V.STRING:
            return self.string(f"value of {key!r}")
        if value_type == _V.ARRAY:
            return self.array(key)
        layout = _SCALARS.get(value_type)
        if layout is None:
            raise _Corrupt(f"corrupt header: {key!r} has unknown value type {value_type}")
        value = self.scalar(layout, f"value of {key!r}")
        if value_type == _V.FLOAT32:
            # the shortest decimal that round-trips in float32: 1e-05, not 9.99999974e-06
            return float(str(np.float32(value)))
        return value

    def array(self, key: str) -> list[Any]:
        element_type = self.scalar(_U32, f"element type of {key!r}")
        count = self.scalar(_U64, f"length of {key!r}")
        if element_type in _NUMPY_TYPES:
            dtype = np.dtype(_NUMPY_TYPES[element_type])
            start = self.take(count * dtype.itemsize, f"array {key!r}")
            values = np.frombuffer(self.buf, dtype=dtype, count=count, offset=start)
            return values.astype(bool).tolist() if element_type == _V.BOOL else values.tolist()
        if element_type == _V.STRING:
            return self.strings(count, key)
        if element_type == _V.ARRAY:
            self.check_count(count, 12, key)  # a nested array takes at least 12 bytes
            return [self.array(f"{key}[{i}]") for i in range(count)]
        raise _Corrupt(f"corrupt header: array {key!r} has unknown element type {element_type}")

    def strings(self, count: int, key: str) -> list[str]:
        # The hot loop of a load (a vocabulary and its merges): kept inline.
        self.check_count(count, 8, key)  # a string takes at least 8 bytes
        buf, pos, size, unpack = self.buf, self.pos, self.size, _U64.unpack_from
        out: list[str] = []
        append = out.append
        try:
            for _ in range(count):
                if pos + 8 > size:
                    break
                end = pos + 8 + unpack(buf, pos)[0]
                if end > size:
                    break
                append(buf[pos + 8 : end].decode("utf-8"))
                pos = end
        except UnicodeDecodeError as exc:
            raise _Corrupt(
                f"corrupt header: element {len(out)} of {key!r} at byte {pos} is not UTF-8"
            ) from exc
        if len(out) < count:
            raise _Corrupt(
                f"truncated or corrupt: element {len(out)} of {key!r} at byte {pos} runs past "
                f"the end of the file (byte {size})"
            )
        self.pos = pos
        return out

    def check_count(self, count: int, min_bytes: int, key: str) -> None:
        """Refuse an array length the rest of the file cannot hold (before looping on it)."""
        if count * min_bytes > self.size - self.pos:
            raise _Corrupt(
                f"truncated or corrupt: array {key!r} at byte {self.pos} claims {count} "
                f"elements, more than the remaining {self.size - self.pos} bytes can hold"
            )


def _parse_header(buf: mmap.mmap, size: int, path: Path) -> GGUFHeader:
    cursor = _Cursor(buf, size)
    magic = bytes(buf[: min(4, size)])
    if magic != b"GGUF":
        raise _Corrupt(f"not a GGUF file: it starts with {magic!r}, not the magic b'GGUF'")
    cursor.take(4, "magic")
    version = cursor.scalar(_U32, "version")
    if version not in (2, 3):
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        detail = " (a big-endian file)" if swapped in (2, 3) else ""
        raise _Corrupt(f"unsupported GGUF version {version}{detail}; zenlm reads versions 2 and 3")
    tensor_count = cursor.scalar(_U64, "tensor count")
    kv_count = cursor.scalar(_U64, "metadata count")
    # every entry takes at least 12 (key/value) or 24 (tensor) bytes: bound the counts
    if kv_count * 12 + tensor_count * 24 > size:
        raise _Corrupt(
            f"corrupt header: it claims {kv_count} metadata entries and {tensor_count} "
            f"tensors, more than a {size}-byte file can hold"
        )
    metadata: dict[str, Any] = {}
    for index in range(kv_count):
        key = cursor.string(f"key of metadata entry {index}")
        if key in metadata:
            raise _Corrupt(f"corrupt header: metadata key {key!r} appears twice")
        metadata[key] = cursor.value(cursor.scalar(_U32, f"type of {key!r}"), key)
    entries = [_read_tensor_entry(cursor, index) for index in range(tensor_count)]
    alignment = metadata.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise _Corrupt(f"corrupt header: general.alignment = {alignment!r} is not a power of 2")
    data_start = -(-cursor.pos // alignment) * alignment
    tensors: dict[str, GGUFTensorInfo] = {}
    for name, shape, ggml_type, offset in entries:
        if name in tensors:
            raise _Corrupt(f"corrupt header: tensor {name!r} appears twice")
        tensors[name] = _tensor_info(name, shape, ggml_type, offset, data_start, alignment, size)
    return GGUFHeader(path, version, metadata, tensors, size)


def _read_tensor_entry(cursor: _Cursor, index: int) -> tuple[str, tuple[int, ...], int, int]:
    name = cursor.string(f"name of tensor {index}")
    n_dims = cursor.scalar(_U32, f"rank of tensor {name!r}")
    if not 1 <= n_dims <= _MAX_DIMS:
        raise _Corrupt(f"corrupt header: tensor {name!r} has {n_dims} dimensions")
    dims = struct.unpack_from(f"<{n_dims}Q", cursor.buf, cursor.take(8 * n_dims, name))
    if 0 in dims:
        raise _Corrupt(f"corrupt header: tensor {name!r} has an empty dimension {dims}")
    ggml_type = cursor.scalar(_U32, f"type of tensor {name!r}")
    offset = cursor.scalar(_U64, f"offset of tensor {name!r}")
    return name, tuple(reversed(dims)), ggml_type, offset  # ggml lists the row dimension first


def _tensor_info(
    name: str, shape: tuple[int, ...], ggml_type: int, offset: int, data_start: int,
    alignment: int, size: int,
) -> GGUFTensorInfo:
    if offset % alignment:
        raise _Corrupt(f"corrupt header: tensor {name!r} starts at unaligned offset {offset}")
    start = data_start + offset
    try:
        block_elems, block_bytes = GGML_QUANT_SIZES[_Q(ggml_type)]
    except (ValueError, KeyError):
        return GGUFTensorInfo(name, shape, ggml_type, start, -1)  # refused when loaded
    if shape[-1] % block_elems:
        raise _Corrupt(
            f"corrupt header: tensor {name!r} has rows of {shape[-1]} values, not a multiple "
            f"of the {_type_name(ggml_type)} block size {block_elems}"
        )
    nbytes = math.prod(shape) // block_elems * block_bytes
    if start + nbytes > size:
        raise _Corrupt(
            f"truncated: tensor {name!r} needs bytes {start}..{start + nbytes}, but the file "
            f"ends at byte {size}"
        )
    return GGUFTensorInfo(name, shape, ggml_type, start, nbytes)


class _GGUFFile:
    """A parsed header plus a read-only memory map of the file."""

    def __init__(self, header: GGUFHeader, buf: mmap.mmap) -> None:
        self.header, self.buf = header, buf
        self.raw_all = np.frombuffer(buf, dtype=np.uint8)

    @classmethod
    def open(cls, path: Path) -> _GGUFFile:
        buf = _map(path)
        try:
            header = _parse_header(buf, len(buf), path)
        except _Corrupt as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        return cls(header, buf)

    def raw(self, info: GGUFTensorInfo) -> np.ndarray:
        """The tensor's bytes, uint8, still in the file (no copy; keeps the map alive)."""
        return np.frombuffer(self.buf, dtype=np.uint8, count=info.nbytes, offset=info.offset)

    def values(self, info: GGUFTensorInfo, dtype: torch.dtype) -> tuple[np.ndarray, torch.dtype]:
        """The tensor as numpy values in GGUF's layout (possibly still in the file).

        Returns:
            The values, and the torch dtype their bits hold: float32, or the file's own
            float type when that is `dtype` (no float32 round trip for f16 -> f16).
        """
        native = _FLOATS.get(info.ggml_type, ("", torch.float32))[1]
        keep = native == dtype
        values = _decode(self.raw(info), info.ggml_type, info.shape, to_float32=not keep)
        return values, native if keep else torch.float32


def _to_torch(
    file: _GGUFFile, values: np.ndarray, bits: torch.dtype, dtype: torch.dtype
) -> torch.Tensor:
    """Numpy values -> a torch tensor of `dtype` that owns its memory (not the file's)."""
    if np.may_share_memory(values, file.raw_all):
        values = values.copy()
    tensor = torch.from_numpy(np.ascontiguousarray(values))
    if bits == torch.bfloat16:
        tensor = tensor.view(torch.bfloat16)
    return tensor.to(dtype)


def _map(path: Path) -> mmap.mmap:
    try:
        with path.open("rb") as handle:
            return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a directory, not a .gguf file") from None
    except ValueError:  # mmap refuses empty files
        raise CheckpointError(f"{path}: empty file, not a GGUF file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _plain_metadata(header: GGUFHeader) -> dict[str, Any]:
    return {k: v for k, v in header.metadata.items() if not isinstance(v, list)}


# =================================================================== metadata access
_REQUIRED = object()


def _meta(header: GGUFHeader, key: str, kind: type, default: Any = _REQUIRED) -> Any:
    """A metadata value of the given kind (int, float, str, bool, list), or `default`."""
    if key not in header.metadata:
        if default is _REQUIRED:
            raise CheckpointError(f"{header.path}: metadata has no {key!r}, which is required")
        return default
    value = header.metadata[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if not ok:
        raise CheckpointError(
            f"{header.path}: metadata {key!r} should be {kind.__name__}, got {value!r:.80}"
        )
    return value


# =================================================================== architectures
@dataclass(frozen=True)
class _Architecture:
    """How one llama.cpp architecture maps onto its transformers model.

    Attributes:
        config: Builds the transformers config dict from the file.
        names: llama.cpp name -> transformers name, for tensors outside the blocks.
        block_names: The same for `blk.N.<leaf>`, with `{i}` for the layer index.
        shapes: Expected transformers shapes, from the config.
        transposed: transformers names (layer index as `{i}`) stored transposed.
        rope_permuted: transformers names whose rows llama.cpp permuted, -> the config
            key giving their head count.
    """

    config: Callable[[_GGUFFile], dict[str, Any]]
    names: dict[str, str]
    block_names: dict[str, str]
    shapes: Callable[[dict[str, Any]], dict[str, tuple[int, ...]]]
    transposed: frozenset[str] = frozenset()
    rope_permuted: dict[str, str] = field(default_factory=dict)
    ignored: frozenset[str] = frozenset()  # tensors read into the config instead


def _architecture(header: GGUFHeader) -> _Architecture:
    name = header.architecture
    if name not in _ARCHITECTURES:
        raise UnsupportedModelError(
            f"{header.path}: GGUF architecture {name!r} is not supported; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    return _ARCHITECTURES[name]


def _hf_name(arch: _Architecture, gguf_name: str, n_layers: int) -> str | None:
    if gguf_name in arch.names:
        return arch.names[gguf_name]
    match = re.fullmatch(r"blk\.(\d+)\.(.+)", gguf_name)
    if match is None or int(match[1]) >= n_layers or match[2] not in arch.block_names:
        return None
    return arch.block_names[match[2]].format(i=int(match[1]))


def _generic(hf_name: str) -> str:
    """`model.layers.3.mlp.up_proj.weight` -> `model.layers.{i}.mlp.up_proj.weight`."""
    return re.sub(r"\.(\d+)\.", ".{i}.", hf_name, count=1)


def _to_hf_layout(
    arch: _Architecture, hf_name: str, values: np.ndarray, config: dict[str, Any]
) -> np.ndarray:
    generic = _generic(hf_name)
    if generic in arch.transposed:
        return np.ascontiguousarray(values.T)  # Conv1D keeps (in, out)
    if generic in arch.rope_permuted:
        return _unpermute_rope(values, config[arch.rope_permuted[generic]])
    return values


def _unpermute_rope(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's `permute` of Q/K rows (interleaved pairs -> rotate_half halves).

    Args:
        weight: (n_heads * head_dim, ...) rows as llama.cpp wrote them: within a head,
            row 2i+j holds what transformers keeps at row j * head_dim/2 + i.
        n_heads: Heads in this projection (key/value heads for K).

    Returns:
        A new array with each head's rows in transformers' order.
    """
    half = weight.shape[0] // n_heads // 2
    heads = weight.reshape(n_heads, half, 2, *weight.shape[1:])  # (H, D/2, 2, ...)
    return np.ascontiguousarray(heads.swapaxes(1, 2)).reshape(weight.shape)  # (H, 2, D/2, ...)


def _is_tied(file: _GGUFFile, embedding: str = "token_embd.weight") -> bool:
    """Tied when there is no output matrix, or it is a byte-for-byte copy of the embedding.

    llama.cpp writes no `output.weight` for a tied llama, and a copy for GPT-2.
    """
    tensors = file.header.tensors
    output, embed = tensors.get("output.weight"), tensors.get(embedding)
    if output is None:
        return True
    if embed is None or (output.shape, output.ggml_type) != (embed.shape, embed.ggml_type):
        return False
    return output.nbytes >= 0 and np.array_equal(file.raw(output), file.raw(embed))


def _special_ids(header: GGUFHeader) -> dict[str, int]:
    keys = {
        "bos_token_id": "tokenizer.ggml.bos_token_id",
        "eos_token_id": "tokenizer.ggml.eos_token_id",
        "pad_token_id": "tokenizer.ggml.padding_token_id",
    }
    ids = {name: _meta(header, key, int, None) for name, key in keys.items()}
    return {name: value for name, value in ids.items() if value is not None}


def _vocab_size(header: GGUFHeader, arch: str) -> int:
    size = _meta(header, f"{arch}.vocab_size", int, None)
    if size is None:  # as transformers: the vocabulary's length, else the embedding's rows
        tokens = header.metadata.get("tokenizer.ggml.tokens")
        embed = header.tensors.get("token_embd.weight")
        size = len(tokens) if isinstance(tokens, list) else embed.shape[0] if embed else 0
    return size


# ------------------------------------------------------------------- llama
def _llama_config(file: _GGUFFile) -> dict[str, Any]:
    h = file.header
    hidden = _meta(h, "llama.embedding_length", int)
    heads = _meta(h, "llama.attention.head_count", int)
    kv_heads = _meta(h, "llama.attention.head_count_kv", int, heads)
    if heads <= 0 or kv_heads <= 0 or heads % kv_heads:
        raise CheckpointError(
            f"{h.path}: {heads} attention heads cannot be shared by {kv_heads} key/value heads"
        )
    # llama.cpp writes key_length only when head_dim is not hidden / heads
    head_dim = _meta(h, "llama.attention.key_length", int, None) or _meta(
        h, "llama.rope.dimension_count", int, hidden // heads
    )
    value_dim = _meta(h, "llama.attention.value_length", int, head_dim)
    if value_dim != head_dim:
        raise UnsupportedModelError(
            f"{h.path}: value heads of {value_dim} != key heads of {head_dim} dimensions"
        )
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": _vocab_size(h, "llama"),
        "hidden_size": hidden,
        "intermediate_size": _meta(h, "llama.feed_forward_length", int),
        "num_hidden_layers": _meta(h, "llama.block_count", int),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": _meta(h, "llama.context_length", int),
        "rms_norm_eps": _meta(h, "llama.attention.layer_norm_rms_epsilon", float),
        "rope_theta": _meta(h, "llama.rope.freq_base", float, 10000.0),
        # llama.cpp's llama graph takes these biases when the tensors exist
        "attention_bias": "blk.0.attn_q.bias" in h.tensors,
        "mlp_bias": "blk.0.ffn_gate.bias" in h.tensors,
        "tie_word_embeddings": _is_tied(file),
        **_special_ids(h),
    }
    rope_scaling = _llama_rope_scaling(file, config)
    if rope_scaling is not None:
        config["rope_scaling"] = rope_scaling
    return config


def _llama_rope_scaling(file: _GGUFFile, config: dict[str, Any]) -> dict[str, Any] | None:
    h = file.header
    if "rope_freqs.weight" in h.tensors:
        return _llama3_rope_scaling(file, config)
    kind = _meta(h, "llama.rope.scaling.type", str, None)
    factor = _meta(h, "llama.rope.scaling.factor", float, None)
    if kind is None and (linear := _meta(h, "llama.rope.scale_linear", float, None)):
        kind, factor = "linear", linear  # the key older converters wrote
    if kind in (None, "none") or factor == 1.0:
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": factor}
    if kind == "yarn":
        original = _meta(h, "llama.rope.scaling.original_context_length", int)
        return {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": original}
    raise UnsupportedModelError(
        f"{h.path}: rope scaling {kind!r} is not supported; supported: none, linear, yarn, "
        "llama3 (as rope_freqs)"
    )


def _llama3_rope_scaling(file: _GGUFFile, config: dict[str, Any]) -> dict[str, Any]:
    """Recover Llama 3.x rope scaling from the per-frequency factors llama.cpp stores.

    llama.cpp keeps only the factors (`rope_freqs.weight`, one per rotated pair). The
    largest is `factor`; the other parameters are Meta's published ones, and are kept
    only if they reproduce every stored factor.
    """
    info = file.header.tensors["rope_freqs.weight"]
    head_dim = config["head_dim"]
    if info.shape != (head_dim // 2,) or info.ggml_type != _Q.F32:
        raise CheckpointError(
            f"{file.header.path}: rope_freqs.weight is {info.type_name} {info.shape}, "
            f"expected F32 ({head_dim // 2},)"
        )
    stored = torch.from_numpy(file.values(info, torch.float32)[0].astype(np.float64))
    scaling = {
        "rope_type": "llama3",
        "factor": float(stored.max()),
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    expected = _llama3_factors(scaling, config["rope_theta"], head_dim)
    if not torch.allclose(expected, stored, rtol=1e-5, atol=0):
        raise UnsupportedModelError(
            f"{file.header.path}: rope_freqs.weight does not follow Llama 3's rope scaling "
            f"(factor {scaling['factor']}, low/high frequency factors 1 and 4, original "
            "context 8192); other per-frequency rope factors are not supported"
        )
    return scaling


def _llama3_factors(scaling: dict[str, Any], theta: float, head_dim: int) -> torch.Tensor:
    """The factors convert_hf_to_gguf.py computes for Llama 3 rope scaling, (head_dim/2,)."""
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    wavelen = 2 * math.pi / freqs.double()
    original = scaling["original_max_position_embeddings"]
    low, high, factor = scaling["low_freq_factor"], scaling["high_freq_factor"], scaling["factor"]
    smooth = (original / wavelen - low) / (high - low)
    factors = 1 / ((1 - smooth) / factor + smooth)
    factors = torch.where(wavelen > original / low, torch.full_like(factors, factor), factors)
    return torch.where(wavelen < original / high, torch.ones_like(factors), factors)


def _llama_shapes(c: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    hidden, inter, vocab = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    q_rows = c["num_attention_heads"] * c["head_dim"]
    kv_rows = c["num_key_value_heads"] * c["head_dim"]
    shapes = {
        "model.embed_tokens.weight": (vocab, hidden),
        "model.norm.weight": (hidden,),
        "lm_head.weight": (vocab, hidden),
    }
    block = {
        "input_layernorm.weight": (hidden,),
        "post_attention_layernorm.weight": (hidden,),
        "self_attn.q_proj.weight": (q_rows, hidden),
        "self_attn.k_proj.weight": (kv_rows, hidden),
        "self_attn.v_proj.weight": (kv_rows, hidden),
        "self_attn.o_proj.weight": (hidden, q_rows),
        "mlp.gate_proj.weight": (inter, hidden),
        "mlp.up_proj.weight": (inter, hidden),
        "mlp.down_proj.weight": (hidden, inter),
    }
    if c["attention_bias"]:
        block.update({
            "self_attn.q_proj.bias": (q_rows,), "self_attn.k_proj.bias": (kv_rows,),
            "self_attn.v_proj.bias": (kv_rows,), "self_attn.o_proj.bias": (hidden,),
        })
    if c["mlp_bias"]:
        block.update({
            "mlp.gate_proj.bias": (inter,), "mlp.up_proj.bias": (inter,),
            "mlp.down_proj.bias": (hidden,),
        })
    for i in range(c["num_hidden_layers"]):
        shapes.update({f"model.layers.{i}.{leaf}": shape for leaf, shape in block.items()})
    return shapes


def _with_bias(names: dict[str, str]) -> dict[str, str]:
    """Add the `.bias` twin of every `.weight` entry."""
    biases = {k[: -len("weight")] + "bias": v[: -len("weight")] + "bias" for k, v in names.items()}
    return {**names, **biases}


_LLAMA = _Architecture(
    config=_llama_config,
    names={
        "token_embd.weight": "model.embed_tokens.weight",
        "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight",
    },
    block_names={
        "attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
        "ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
        **_with_bias({
            "attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
            "attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
            "attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
            "attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
            "ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
            "ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
            "ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
        }),
    },
    shapes=_llama_shapes,
    rope_permuted={
        "model.layers.{i}.self_attn.q_proj.weight": "num_attention_heads",
        "model.layers.{i}.self_attn.q_proj.bias": "num_attention_heads",
        "model.layers.{i}.self_attn.k_proj.weight": "num_key_value_heads",
        "model.layers.{i}.self_attn.k_proj.bias": "num_key_value_heads",
    },
    ignored=frozenset({"rope_freqs.weight"}),
)


# ------------------------------------------------------------------- gpt2
def _gpt2_config(file: _GGUFFile) -> dict[str, Any]:
    h = file.header
    n_embd = _meta(h, "gpt2.embedding_length", int)
    n_inner = _meta(h, "gpt2.feed_forward_length", int, 4 * n_embd)
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": _vocab_size(h, "gpt2"),
        "n_embd": n_embd,
        "n_layer": _meta(h, "gpt2.block_count", int),
        "n_head": _meta(h, "gpt2.attention.head_count", int),
        "n_positions": _meta(h, "gpt2.context_length", int),
        "n_inner": None if n_inner == 4 * n_embd else n_inner,  # None: 4 * n_embd, as in HF
        "activation_function": "gelu_new",  # ggml_gelu is the tanh approximation
        "layer_norm_epsilon": _meta(h, "gpt2.attention.layer_norm_epsilon", float),
        "tie_word_embeddings": _is_tied(file),
        **_special_ids(h),
    }


def _gpt2_shapes(c: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    e, vocab = c["n_embd"], c["vocab_size"]
    inner = c["n_inner"] or 4 * e
    shapes: dict[str, tuple[int, ...]] = {
        "transformer.wte.weight": (vocab, e),
        "transformer.wpe.weight": (c["n_positions"], e),
        "transformer.ln_f.weight": (e,),
        "transformer.ln_f.bias": (e,),
        "lm_head.weight": (vocab, e),
    }
    block = {
        "ln_1.weight": (e,), "ln_1.bias": (e,), "ln_2.weight": (e,), "ln_2.bias": (e,),
        "attn.c_attn.weight": (e, 3 * e), "attn.c_attn.bias": (3 * e,),
        "attn.c_proj.weight": (e, e), "attn.c_proj.bias": (e,),
        "mlp.c_fc.weight": (e, inner), "mlp.c_fc.bias": (inner,),
        "mlp.c_proj.weight": (inner, e), "mlp.c_proj.bias": (e,),
    }
    for i in range(c["n_layer"]):
        shapes.update({f"transformer.h.{i}.{leaf}": shape for leaf, shape in block.items()})
    return shapes


_GPT2 = _Architecture(
    config=_gpt2_config,
    names={
        "token_embd.weight": "transformer.wte.weight",
        "position_embd.weight": "transformer.wpe.weight",
        "output_norm.weight": "transformer.ln_f.weight",
        "output_norm.bias": "transformer.ln_f.bias",
        "output.weight": "lm_head.weight",
    },
    block_names=_with_bias({
        "attn_norm.weight": "transformer.h.{i}.ln_1.weight",
        "attn_qkv.weight": "transformer.h.{i}.attn.c_attn.weight",
        "attn_output.weight": "transformer.h.{i}.attn.c_proj.weight",
        "ffn_norm.weight": "transformer.h.{i}.ln_2.weight",
        "ffn_up.weight": "transformer.h.{i}.mlp.c_fc.weight",
        "ffn_down.weight": "transformer.h.{i}.mlp.c_proj.weight",
    }),
    shapes=_gpt2_shapes,
    transposed=frozenset({
        "transformer.h.{i}.attn.c_attn.weight",
        "transformer.h.{i}.attn.c_proj.weight",
        "transformer.h.{i}.mlp.c_fc.weight",
        "transformer.h.{i}.mlp.c_proj.weight",
    }),
)

_ARCHITECTURES = {"llama": _LLAMA, "gpt2": _GPT2}


# =================================================================== state dict
def _plan(
    file: _GGUFFile, arch: _Architecture, config: dict[str, Any]
) -> dict[str, GGUFTensorInfo]:
    """Map each transformers name to its tensor, after checking names, types and shapes."""
    h = file.header
    n_layers = config.get("num_hidden_layers", config.get("n_layer"))
    expected = arch.shapes(config)
    tied = config["tie_word_embeddings"]
    plan: dict[str, GGUFTensorInfo] = {}
    for info in h.tensors.values():
        if info.name in arch.ignored:
            continue
        hf_name = _hf_name(arch, info.name, n_layers)
        if hf_name is None or hf_name not in expected:
            raise UnsupportedModelError(
                f"{h.path}: tensor {info.name!r} has no place in a transformers "
                f"{config['model_type']} model with this config"
            )
        if info.ggml_type not in _READABLE:
            raise UnsupportedModelError(
                f"{h.path}: tensor {info.name!r} is stored as {info.type_name}, which zenlm "
                f"cannot dequantize; supported: {', '.join(SUPPORTED_TENSOR_TYPES)}"
            )
        shape = _hf_shape(arch, hf_name, info.shape)
        if shape != expected[hf_name]:
            raise CheckpointError(
                f"{h.path}: tensor {info.name!r} ({hf_name}) has shape {shape}, but the "
                f"hyperparameters call for {expected[hf_name]}"
            )
        if not (tied and hf_name == "lm_head.weight"):
            plan[hf_name] = info
    missing = [name for name in expected if name not in plan and name != "lm_head.weight"]
    if missing:
        raise CheckpointError(
            f"{h.path}: {len(missing)} tensor(s) missing, e.g. {', '.join(missing[:3])}"
        )
    return plan


def _hf_shape(arch: _Architecture, hf_name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(reversed(shape)) if _generic(hf_name) in arch.transposed else shape


# =================================================================== tokenizer
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN35_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TEKKEN_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT4O_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# `tokenizer.ggml.pre` -> the split regex of the vocabulary's own tokenizer, for the
# values transformers (5.x, integrations/gguf) honours; any other value (including
# "gpt-2" and "smollm") gets GPT-2's byte-level regex, as in transformers.
_PRE_TOKENIZER_SPLITS = {
    **dict.fromkeys(
        ["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0",
         "lfm2", "jina-v5-nano", "dbrx", "smaug-bpe"],
        _LLAMA3_SPLIT,
    ),
    "tekken": _TEKKEN_SPLIT,
    **dict.fromkeys(["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez"], _QWEN2_SPLIT),
    "qwen35": _QWEN35_SPLIT,
    **dict.fromkeys(["gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"], _GPT4O_SPLIT),
}
SUPPORTED_TOKENIZER_MODELS = ("gpt2", "llama")


@dataclass(frozen=True)
class _Vocabulary:
    """The `tokenizer.ggml.*` arrays, checked for type and length."""

    tokens: list[str]
    types: list[int]
    scores: list[float] | None
    merges: list[str] | None


def _build_tokenizer(header: GGUFHeader) -> Tokenizer:
    model = _meta(header, "tokenizer.ggml.model", str)
    if model not in SUPPORTED_TOKENIZER_MODELS:
        raise UnsupportedModelError(
            f"{header.path}: tokenizer model {model!r} (tokenizer.ggml.model) is not supported; "
            f"supported: {', '.join(SUPPORTED_TOKENIZER_MODELS)}"
        )
    vocab = _vocabulary(header)
    specials = {
        name: _token(header, vocab, f"tokenizer.ggml.{key}")
        for name, key in [("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                          ("pad_token", "padding_token_id"), ("unk_token", "unknown_token_id")]
    }
    # llama.cpp adds BOS to a sentencepiece vocabulary that does not say otherwise
    add_bos = _meta(header, "tokenizer.ggml.add_bos_token", bool, model == "llama")
    add_eos = _meta(header, "tokenizer.ggml.add_eos_token", bool, False)
    bos = specials["bos_token"] if add_bos else None
    eos = specials["eos_token"] if add_eos else None
    try:
        backend = (_byte_level_bpe if model == "gpt2" else _sentencepiece_bpe)(header, vocab)
        _add_marked_tokens(backend, vocab, byte_level=model == "gpt2")
        _add_special_tokens(backend, specials.values())
        backend.post_processor = _template_processor(backend, bos, eos)
    except CheckpointError:
        raise
    except Exception as exc:  # tokenizers' Rust errors (e.g. a merge of unknown tokens)
        raise CheckpointError(f"{header.path}: cannot build the tokenizer ({exc})") from exc
    return Tokenizer(
        backend,
        **specials,
        chat_template=_meta(header, "tokenizer.chat_template", str, None),
        add_bos=bos is not None,
    )


def _vocabulary(header: GGUFHeader) -> _Vocabulary:
    tokens = _meta(header, "tokenizer.ggml.tokens", list)
    types = _meta(header, "tokenizer.ggml.token_type", list, [TokenType.NORMAL] * len(tokens))
    scores = _meta(header, "tokenizer.ggml.scores", list, None)
    merges = _meta(header, "tokenizer.ggml.merges", list, None)
    checks = [
        ("tokenizer.ggml.tokens", tokens, str),
        ("tokenizer.ggml.token_type", types, int),
        ("tokenizer.ggml.scores", scores or [], (int, float)),
        ("tokenizer.ggml.merges", merges or [], str),
    ]
    for key, values, kind in checks:
        if not all(isinstance(v, kind) for v in values):
            raise CheckpointError(f"{header.path}: {key} holds values of the wrong type")
    for key, values in [("token_type", types), ("scores", scores)]:
        if values is not None and len(values) != len(tokens):
            raise CheckpointError(
                f"{header.path}: tokenizer.ggml.{key} has {len(values)} entries for "
                f"{len(tokens)} tokens"
            )
    return _Vocabulary(tokens, types, scores, merges)


def _token(header: GGUFHeader, vocab: _Vocabulary, key: str) -> str | None:
    index = _meta(header, key, int, None)
    if index is None:
        return None
    if not 0 <= index < len(vocab.tokens):
        raise CheckpointError(
            f"{header.path}: {key} = {index} is outside the vocabulary of {len(vocab.tokens)}"
        )
    return vocab.tokens[index]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table for byte-level BPE."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    table = {b: chr(b) for b in printable}
    table.update({b: chr(256 + n) for n, b in enumerate(others)})
    return table


_BYTE_CHARS = _bytes_to_unicode()
_BYTE_ALPHABET = frozenset(_BYTE_CHARS.values())


def _byte_level_bpe(header: GGUFHeader, vocab: _Vocabulary) -> tokenizers.Tokenizer:
    """GPT-2-style byte-level BPE, as transformers' GGUF converter builds it."""
    if vocab.merges is None:
        raise CheckpointError(f"{header.path}: a gpt2 tokenizer needs tokenizer.ggml.merges")
    # A token stored as raw text (e.g. with a real space) is respelled in the byte alphabet.
    ids = {
        token if set(token) <= _BYTE_ALPHABET
        else "".join(_BYTE_CHARS[b] for b in token.encode("utf-8")): index
        for index, token in enumerate(vocab.tokens)
    }
    backend = tokenizers.Tokenizer(BPE(
        vocab=ids, merges=_split_merges(header, vocab.merges), dropout=None,
        continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False,
    ))
    split = _PRE_TOKENIZER_SPLITS.get(header.metadata.get("tokenizer.ggml.pre"))
    if split is None:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    backend.decoder = decoders.ByteLevel()
    return backend


def _split_merges(header: GGUFHeader, merges: list[str]) -> list[tuple[str, str]]:
    pairs = [tuple(merge.split(" ")) for merge in merges]
    for index, pair in enumerate(pairs):
        if len(pair) != 2:
            raise CheckpointError(
                f"{header.path}: tokenizer.ggml.merges[{index}] = {merges[index]!r} is not "
                "two tokens separated by one space"
            )
    return pairs  # type: ignore[return-value]


def _sentencepiece_bpe(header: GGUFHeader, vocab: _Vocabulary) -> tokenizers.Tokenizer:
    """SentencePiece BPE with byte fallback, as transformers' LlamaTokenizer builds it.

    A llama.cpp "llama" vocabulary has scores but (usually) no merges; the merges are
    every split of a token into two tokens, best score first (transformers'
    `generate_merges`).
    """
    ids = {token: index for index, token in enumerate(vocab.tokens)}
    if vocab.merges is not None:
        merges = _split_merges(header, vocab.merges)
    elif vocab.scores is not None:
        merges = _merges_from_scores(ids, dict(zip(vocab.tokens, vocab.scores, strict=True)))
    else:
        raise CheckpointError(
            f"{header.path}: a llama tokenizer needs tokenizer.ggml.scores or tokenizer.ggml.merges"
        )
    backend = tokenizers.Tokenizer(
        BPE(vocab=ids, merges=merges, fuse_unk=True, byte_fallback=True, dropout=None)
    )
    backend.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme="first", split=False
    )
    backend.decoder = decoders.Sequence([
        decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
        decoders.Strip(content=" ", left=1, right=0),
    ])
    return backend


def _merges_from_scores(
    ids: dict[str, int], scores: dict[str, float]
) -> list[tuple[str, str]]:
    """Every (left, right) split of a token into two tokens, best token score first."""
    merges = []
    for piece, score in scores.items():
        splits = [
            (piece[:cut], piece[cut:], score) for cut in range(1, len(piece))
            if piece[:cut] in ids and piece[cut:] in ids
        ]
        merges.extend(sorted(splits, key=lambda m: (ids[m[0]], ids[m[1]])))
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(left, right) for left, right, _ in merges]


def _add_marked_tokens(
    backend: tokenizers.Tokenizer, vocab: _Vocabulary, *, byte_level: bool
) -> None:
    """CONTROL tokens become special tokens, USER_DEFINED ones plain added tokens.

    Either way they are matched whole in the text instead of being cut into pieces. In a
    byte-level vocabulary a CONTROL token spelled outside the byte alphabet is a
    llama.cpp mislabel and is skipped (as transformers does).
    """
    marked = list(zip(vocab.tokens, vocab.types, strict=True))
    control = [
        AddedToken(token, normalized=False, special=True) for token, kind in marked
        if kind == TokenType.CONTROL and (not byte_level or set(token) <= _BYTE_ALPHABET)
    ]
    if control:
        backend.add_special_tokens(control)
    known = backend.get_vocab(with_added_tokens=True)
    user = [
        AddedToken(token, normalized=False, special=False) for token, kind in marked
        if kind == TokenType.USER_DEFINED and token in known
    ]
    if user:
        backend.add_tokens(user)


def _add_special_tokens(backend: tokenizers.Tokenizer, tokens: Iterable[str | None]) -> None:
    """Register BOS/EOS/PAD/UNK as special tokens, as transformers does.

    Most are CONTROL tokens, added already; an UNKNOWN-typed `<unk>` is not. Special,
    they match whole in text and `decode(skip_special_tokens=True)` drops them.
    """
    added = {token.content for token in backend.get_added_tokens_decoder().values()}
    backend.add_special_tokens([
        AddedToken(token, normalized=False, special=True)
        for token in dict.fromkeys(tokens) if token and token not in added
    ])


def _template_processor(
    backend: tokenizers.Tokenizer, bos: str | None, eos: str | None
) -> processors.TemplateProcessing:
    """Add BOS/EOS around a sequence, as transformers' `update_post_processor` does."""
    head = f"{bos}:0 " if bos else ""
    tail = f" {eos}:0" if eos else ""
    single = f"{head}$A:0{tail}"
    pair = f"{single}{f' {bos}:1' if bos else ''} $B:1{f' {eos}:1' if eos else ''}"
    specials = [(token, backend.token_to_id(token)) for token in (bos, eos) if token]
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)
