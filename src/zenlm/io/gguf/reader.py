"""The GGUF container: header, metadata and tensor table, over a memory map of the file.

The header is parsed here with `struct` over a memory map instead of with
`gguf.GGUFReader`: the reader builds one numpy view per element of every metadata
array, which takes ~5 s on SmolLM2's 49k-token vocabulary and merges (this parser:
0.08 s; measured with both on one busy 2-core machine). The tensor types, block sizes
and value types are gguf-py's own tables, and the tests check this parser against
`GGUFReader`. Every structural fault is a `CheckpointError` naming the file and the byte.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf.constants import (
    GGML_QUANT_SIZES,
    GGUF_DEFAULT_ALIGNMENT,
    GGMLQuantizationType,
    GGUFValueType,
)

from zenlm.errors import CheckpointError
from zenlm.io.gguf.quants import FLOATS, decode, type_name

__all__ = ["GGUFFile", "GGUFHeader", "GGUFTensorInfo", "meta", "read_gguf_header"]

_Q = GGMLQuantizationType


def read_gguf_header(path: str | Path) -> GGUFHeader:
    """Parse a GGUF file's metadata and tensor table without reading tensor data.

    Raises:
        CheckpointError: if the file is missing, not GGUF, truncated or corrupt.
    """
    return GGUFFile.open(Path(path)).header


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
        return type_name(self.ggml_type)


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


class _Corrupt(Exception):
    """A fault in the file's structure; `GGUFFile.open` adds the path and re-raises."""


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
    data_start = _padded(cursor.pos, alignment)
    tensors: dict[str, GGUFTensorInfo] = {}
    for name, shape, ggml_type, offset in entries:
        if name in tensors:
            raise _Corrupt(f"corrupt header: tensor {name!r} appears twice")
        tensors[name] = _tensor_info(name, shape, ggml_type, offset, data_start, alignment, size)
    _check_packed(list(tensors.values()), data_start, alignment, size)
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
            f"of the {type_name(ggml_type)} block size {block_elems}"
        )
    nbytes = math.prod(shape) // block_elems * block_bytes
    if start + nbytes > size:
        raise _Corrupt(
            f"truncated: tensor {name!r} needs bytes {start}..{start + nbytes}, but the file "
            f"ends at byte {size}"
        )
    return GGUFTensorInfo(name, shape, ggml_type, start, nbytes)


def _check_packed(
    tensors: list[GGUFTensorInfo], data_start: int, alignment: int, size: int
) -> None:
    """Tensors packed in table order, each padded to `alignment`, up to the end of the file.

    llama.cpp refuses a file whose tensors are laid out any other way (gguf.cpp: "tensor
    has offset N, expected M"), and every writer packs them so. Checking it catches a
    corrupt offset, type or shape that would otherwise read the wrong bytes: the tensor
    then overlaps its neighbour or leaves a gap. The last tensor's padding may be missing.
    """
    expected, previous = data_start, "the data section starts"
    for info in tensors:
        if info.nbytes < 0:  # an unknown type: its size, and so the rest, is unknown
            return
        if info.offset != expected:
            raise _Corrupt(
                f"corrupt header: tensor {info.name!r} starts at data offset "
                f"{info.offset - data_start}, but {previous} at {expected - data_start} "
                "(tensors are packed in table order)"
            )
        expected = _padded(info.offset + info.nbytes, alignment)
        previous = f"tensor {info.name!r} before it ends"
    if tensors and size > expected:
        raise _Corrupt(
            f"corrupt: {size - expected} bytes follow the data of the last tensor "
            f"({tensors[-1].name!r}, which ends at byte {expected}); its type or shape in the "
            "header may be wrong"
        )


def _padded(offset: int, alignment: int) -> int:
    return -(-offset // alignment) * alignment


class GGUFFile:
    """A parsed header plus a read-only memory map of the file."""

    def __init__(self, header: GGUFHeader, buf: mmap.mmap) -> None:
        self.header, self.buf = header, buf
        self.raw_all = np.frombuffer(buf, dtype=np.uint8)

    @classmethod
    def open(cls, path: Path) -> GGUFFile:
        """Map and parse `path` (CheckpointError naming it and the fault)."""
        buf = _map(path)
        try:
            header = _parse_header(buf, len(buf), path)
        except _Corrupt as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        return cls(header, buf)

    def raw(self, info: GGUFTensorInfo) -> np.ndarray:
        """The tensor's bytes, uint8, still in the file (no copy; keeps the map alive)."""
        return np.frombuffer(self.buf, dtype=np.uint8, count=info.nbytes, offset=info.offset)

    def release(self, info: GGUFTensorInfo) -> None:
        """Drop the tensor's pages of the file from this process's resident set.

        Call it once the tensor's values are copied out. Mapped pages count in RSS for
        as long as the map lives: without this, reading a whole file raised a load's
        peak RSS by the file's size. The bytes stay readable (the map is read-only and
        file-backed: a later read pages them back in from the page cache).
        """
        start = info.offset - info.offset % mmap.PAGESIZE  # madvise takes whole pages
        if info.nbytes > 0 and hasattr(mmap, "MADV_DONTNEED"):
            self.buf.madvise(mmap.MADV_DONTNEED, start, info.offset + info.nbytes - start)

    def values(self, info: GGUFTensorInfo, dtype: torch.dtype) -> tuple[np.ndarray, torch.dtype]:
        """The tensor as numpy values in GGUF's layout (possibly still in the file).

        Returns:
            The values, and the torch dtype their bits hold: float32, or the file's own
            float type when that is `dtype` (no float32 round trip for f16 -> f16).
        """
        native = FLOATS.get(info.ggml_type, ("", torch.float32))[1]
        keep = native == dtype
        values = decode(self.raw(info), info.ggml_type, info.shape, to_float32=not keep)
        return values, native if keep else torch.float32


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


REQUIRED = object()


def meta(header: GGUFHeader, key: str, kind: type, default: Any = REQUIRED) -> Any:
    """A metadata value of the given kind (int, float, str, bool, list), or `default`."""
    if key not in header.metadata:
        if default is REQUIRED:
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
