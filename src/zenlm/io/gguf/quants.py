"""Dequantizing ggml's tensor types: bytes as stored in a GGUF file -> float32 numpy.

Decoding is whole-tensor numpy written from ggml's block layouts (ggml-common.h): the
same float32 values, bit for bit, as `gguf.quants.dequantize`, with 1.6x (Q4_1) to
3.5x (Q8_0) less CPU time. The block sizes are gguf-py's own table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from zenlm.errors import UnsupportedModelError

__all__ = ["FLOATS", "READABLE", "SUPPORTED_TENSOR_TYPES", "decode", "dequantize", "type_name"]

_Q = GGMLQuantizationType
SUPPORTED_TENSOR_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K")
"""ggml tensor types zenlm can read (by `GGMLQuantizationType` name)."""


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
    values = decode(data, int(ggml_type), tuple(shape), to_float32=True)
    return torch.from_numpy(values.copy() if np.may_share_memory(values, data) else values)


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
FLOATS: dict[int, tuple[str, torch.dtype]] = {
    _Q.F32: ("<f4", torch.float32),
    _Q.F16: ("<f2", torch.float16),
    _Q.BF16: ("<u2", torch.bfloat16),
}
READABLE = {*_DECODERS, *FLOATS}


def decode(
    data: np.ndarray, ggml_type: int, shape: tuple[int, ...], *, to_float32: bool
) -> np.ndarray:
    """A tensor's bytes -> numpy values of `shape` (may alias `data`).

    Quantized types come back float32. Float types come back float32 if `to_float32`,
    else in their own bits (BF16 as uint16, for torch to view as bfloat16).
    """
    if ggml_type not in READABLE:
        raise UnsupportedModelError(
            f"cannot dequantize ggml type {type_name(ggml_type)}; "
            f"supported: {', '.join(SUPPORTED_TENSOR_TYPES)}"
        )
    block_elems, block_bytes = GGML_QUANT_SIZES[_Q(ggml_type)]
    if shape[-1] % block_elems or data.size != math.prod(shape) // block_elems * block_bytes:
        raise ValueError(
            f"{data.size} bytes of {type_name(ggml_type)} cannot hold a tensor of shape {shape}"
        )
    if ggml_type in _DECODERS:
        return _decode_blocks(_DECODERS[ggml_type], data.reshape(-1, block_bytes),
                              block_elems).reshape(shape)
    values = data.view(FLOATS[ggml_type][0]).reshape(shape)
    if not to_float32 or ggml_type == _Q.F32:
        return values
    if ggml_type == _Q.BF16:  # bfloat16 is the top half of a float32
        return (values.astype(np.uint32) << 16).view(_F32)
    return values.astype(_F32)


#: Values decoded at a time (4 MB of float32): a decoder's temporaries are a few times
#: its output, so a 1.1B model's output head (Q6_K, 262 MB in float32) decoded at once
#: raised a load's peak by ~250 MB beyond the values themselves.
CHUNK_VALUES = 1 << 20


def _decode_blocks(
    decoder: Callable[[np.ndarray], np.ndarray], blocks: np.ndarray, block_elems: int
) -> np.ndarray:
    """(n_blocks, block_bytes) uint8 -> (n_blocks, block_elems) float32, a chunk at a time."""
    per_chunk = max(1, CHUNK_VALUES // block_elems)
    if len(blocks) <= per_chunk:
        return decoder(blocks)
    out = np.empty((len(blocks), block_elems), dtype=_F32)
    for start in range(0, len(blocks), per_chunk):
        out[start:start + per_chunk] = decoder(blocks[start:start + per_chunk])
    return out


def type_name(ggml_type: int) -> str:
    """The type's ggml name, e.g. `Q4_K`, or `type 99` for an id gguf-py does not know."""
    try:
        return _Q(ggml_type).name
    except ValueError:
        return f"type {ggml_type}"


