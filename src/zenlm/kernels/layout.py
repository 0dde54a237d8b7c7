"""The int4 weight layout of `int4_linear.cpp`, packed and unpacked with torch ops.

A row of K inputs (K a multiple of 64) is G = K / 32 groups of 32 codes in 0..15. Its
K / 2 bytes hold first "chunks" of 16 groups (256 bytes: 4 blocks of 64 bytes; in block
j, byte 4 l + t holds group l's input 8 j + t in its low nibble and input 8 j + 4 + t in
its high nibble), then the remaining groups two by two (32 bytes: byte i holds the first
group's input i low and the second group's input i high). The kernel's comment says why.
"""

from __future__ import annotations

import torch

GROUP = 32  # codes per scale and min
LANES = 16  # groups per chunk
K_MULTIPLE = 2 * GROUP  # rows hold whole pairs of groups


def pack_codes(q: torch.Tensor) -> torch.Tensor:
    """Codes (N, K) in 0..15 -> packed bytes (N, K / 2) uint8 in the kernel's layout."""
    N, K = q.shape
    if K % K_MULTIPLE:
        raise ValueError(f"int4 codes need K divisible by {K_MULTIPLE}, got K={K}")
    q = q.to(torch.uint8)
    split = _chunk_inputs(K)
    # (N, C, 16 groups, 4 blocks, 2 nibbles, 4) -> (N, C, 4 blocks, 16 groups, 4, 2 nibbles)
    chunks = q[:, :split].reshape(N, -1, LANES, 4, 2, 4).permute(0, 1, 3, 2, 5, 4)
    pairs = q[:, split:].reshape(N, -1, 2, GROUP).transpose(-1, -2)  # (N, P, 32, 2 nibbles)
    return torch.cat([_nibbles(chunks).reshape(N, -1), _nibbles(pairs).reshape(N, -1)], 1)


def unpack_codes(packed: torch.Tensor) -> torch.Tensor:
    """Packed bytes (..., K / 2) uint8 -> codes (..., K) uint8 in input order."""
    *lead, half = packed.shape
    K = 2 * half
    split = _chunk_inputs(K)
    nibbles = torch.stack([packed & 15, packed >> 4], dim=-1)  # (..., K / 2, 2)
    chunks = nibbles[..., : split // 2, :].reshape(*lead, -1, 4, LANES, 4, 2)
    chunks = chunks.movedim(-3, -4).transpose(-1, -2)  # (..., C, 16 groups, 4 blocks, 2, 4)
    pairs = nibbles[..., split // 2 :, :].reshape(*lead, -1, GROUP, 2).transpose(-1, -2)
    return torch.cat([chunks.reshape(*lead, -1), pairs.reshape(*lead, -1)], -1)


def _chunk_inputs(K: int) -> int:
    """How many of a row's K inputs lie in whole chunks of 16 groups (the rest: pairs)."""
    return K // (GROUP * LANES) * GROUP * LANES


def _nibbles(codes: torch.Tensor) -> torch.Tensor:
    """(..., 2) codes -> (...) bytes, the first code in the low nibble."""
    return codes[..., 0] | (codes[..., 1] << 4)
