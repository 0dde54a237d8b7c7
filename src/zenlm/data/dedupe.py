"""Exact and near-duplicate removal.

Exact duplicates are found by a hash of the whitespace- and case-normalised text.
Near duplicates by MinHash over character 5-gram shingles (so Chinese text, which has
no spaces, works too) with locality-sensitive hashing in bands: two documents whose
shingle sets have Jaccard similarity above the threshold collide in some band with
high probability, and a collision is confirmed on the estimated similarity.
"""

from __future__ import annotations

import hashlib
import re
import zlib

import numpy as np

_WS = re.compile(r"\s+")
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _normalise(text: str) -> str:
    return _WS.sub(" ", text).strip().lower()


class ExactDeduper:
    """Remembers a 16-byte digest per document seen; `seen(text)` is True on repeats."""

    def __init__(self) -> None:
        self._digests: set[bytes] = set()

    def seen(self, text: str) -> bool:
        """Whether `text` (normalised) was seen before; records it if not."""
        digest = hashlib.blake2b(_normalise(text).encode("utf-8"), digest_size=16).digest()
        if digest in self._digests:
            return True
        self._digests.add(digest)
        return False


class MinHashDeduper:
    """Near-duplicate filter over a stream of documents.

    Args:
        threshold: Estimated Jaccard similarity at or above which a document is a
            near duplicate of one kept earlier.
        num_perm: Hash functions per signature (bands * rows).
        bands: LSH bands; more bands catch lower similarities (more candidates).
        shingle: Characters per shingle.
        seed: Seed of the hash functions.
    """

    def __init__(
        self, threshold: float = 0.8, *, num_perm: int = 128, bands: int = 32,
        shingle: int = 5, seed: int = 0,
    ) -> None:
        if num_perm % bands:
            raise ValueError(f"num_perm={num_perm} must be a multiple of bands={bands}")
        rng = np.random.default_rng(seed)
        self.threshold, self.bands, self.shingle = threshold, bands, shingle
        self.rows = num_perm // bands
        self._xor = rng.integers(0, 2**63, num_perm, dtype=np.uint64)
        self._mul = rng.integers(0, 2**63, num_perm, dtype=np.uint64) | np.uint64(1)
        self._buckets: list[dict[bytes, int]] = [{} for _ in range(bands)]
        self._signatures: list[np.ndarray] = []

    def signature(self, text: str) -> np.ndarray:
        """MinHash signature (num_perm,) uint64 of `text`'s character shingles."""
        norm = _normalise(text)
        k = self.shingle
        grams = {norm[i:i + k] for i in range(max(1, len(norm) - k + 1))}
        hashes = np.fromiter((zlib.crc32(g.encode("utf-8")) for g in grams), dtype=np.uint64)
        # Multiply-xor hashing in wrapping uint64 arithmetic: one row per hash function.
        with np.errstate(over="ignore"):
            mixed = ((hashes[None, :] ^ self._xor[:, None]) * self._mul[:, None]) & _MASK64
        return mixed.min(axis=1)  # (num_perm,)

    def seen(self, text: str) -> bool:
        """Whether `text` nearly duplicates a document kept earlier; records it if not."""
        sig = self.signature(text)
        keys = [sig[b * self.rows:(b + 1) * self.rows].tobytes() for b in range(self.bands)]
        candidates = {self._buckets[b][key] for b, key in enumerate(keys)
                      if key in self._buckets[b]}
        for index in candidates:
            if float(np.mean(self._signatures[index] == sig)) >= self.threshold:
                return True
        index = len(self._signatures)
        self._signatures.append(sig)
        for b, key in enumerate(keys):
            self._buckets[b].setdefault(key, index)
        return False
