"""Token shards: a corpus tokenized once into a memmapped array, split train/val.

Layout of one shard set (a folder named by the content hash of its inputs):

    tokens.bin   all token ids, documents joined by the EOS id, uint16 or uint32
    meta.json    dtype, token counts, where validation starts, the hash's inputs

The split follows nanoGPT: the last `val_fraction` of the token stream is the
validation set, so a single long document (a novel) still gets both parts. A shard set
is reused when the same files, tokenizer and options are asked for again; it is written
into a temporary folder and renamed, so a crash never leaves a half-written one.

`BlockSampler` serves fixed-length blocks in a shuffled order that is a pure function
of (seed, epoch), so the data position of a run is one integer.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from zenlm.data.readers import TxtUnit, expand_paths, read_documents
from zenlm.tokenizer import Tokenizer

SHARD_FORMAT = 1


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits in it, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


@dataclass
class ShardSet:
    """A tokenized corpus on disk.

    Attributes:
        folder: Where tokens.bin and meta.json are.
        tokens: Every token id (N,), memory-mapped.
        split: Index of the first validation token.
    """

    folder: Path
    tokens: np.ndarray
    split: int

    @property
    def train(self) -> np.ndarray:
        """Training tokens (memmap view)."""
        return self.tokens[: self.split]

    @property
    def val(self) -> np.ndarray:
        """Validation tokens (memmap view)."""
        return self.tokens[self.split:]

    @classmethod
    def open(cls, folder: str | Path) -> ShardSet:
        """Open a finished shard set."""
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        tokens = np.memmap(folder / "tokens.bin", dtype=np.dtype(meta["dtype"]), mode="r")
        if len(tokens) != meta["n_tokens"]:
            raise ValueError(f"{folder}: tokens.bin has {len(tokens)} tokens, meta.json says "
                             f"{meta['n_tokens']}; delete the folder to rebuild it")
        return cls(folder, tokens, meta["split"])


def _file_digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def shard_key(files: list[Path], tokenizer: Tokenizer, options: dict) -> str:
    """Content hash of everything a shard set depends on."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": SHARD_FORMAT, **options}, sort_keys=True).encode())
    digest.update(tokenizer.backend.to_str().encode("utf-8"))
    for path in files:
        digest.update(_file_digest(path).encode())
    return digest.hexdigest()[:20]


def build_shards(
    inputs: Iterable[str | Path],
    tokenizer: Tokenizer,
    cache_dir: str | Path,
    *,
    val_fraction: float = 0.1,
    field: str = "text",
    txt_unit: TxtUnit = "paragraph",
    skip_bad_lines: bool = False,
    progress: bool = True,
) -> ShardSet:
    """Tokenize `inputs` into `cache_dir/<hash>/` (or reuse it) and open it.

    Raises:
        ValueError: an empty corpus, a val_fraction outside [0, 1), or too few tokens.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    files = expand_paths(inputs)
    options = {"val_fraction": val_fraction, "field": field, "txt_unit": txt_unit,
               "skip_bad_lines": skip_bad_lines}
    folder = Path(cache_dir) / shard_key(files, tokenizer, options)
    if (folder / "meta.json").is_file():
        return ShardSet.open(folder)
    docs = read_documents(files, field=field, txt_unit=txt_unit, skip_bad_lines=skip_bad_lines)
    _write_shards(folder, _token_chunks(docs, tokenizer), tokenizer, val_fraction,
                  [str(p) for p in files], progress)
    return ShardSet.open(folder)


def _token_chunks(docs: Iterable[str], tokenizer: Tokenizer, batch: int = 256) -> Iterator[
    list[int]
]:
    """Token ids per document, EOS appended, tokenized in batches by the Rust backend."""
    eos = tokenizer.eos_token_id
    pending: list[str] = []

    def flush() -> Iterator[list[int]]:
        for enc in tokenizer.backend.encode_batch(pending, add_special_tokens=False):
            yield enc.ids + ([eos] if eos is not None else [])

    for doc in docs:
        pending.append(doc)
        if len(pending) == batch:
            yield from flush()
            pending = []
    if pending:
        yield from flush()


def _write_shards(
    folder: Path, chunks: Iterator[list[int]], tokenizer: Tokenizer, val_fraction: float,
    files: list[str], progress: bool,
) -> None:
    dtype = token_dtype(tokenizer.vocab_size)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n_tokens = 0
    with (tmp / "tokens.bin").open("wb") as handle:
        for ids in tqdm(chunks, unit=" docs", desc="tokenize", disable=not progress):
            handle.write(np.asarray(ids, dtype=dtype).tobytes())
            n_tokens += len(ids)
    if n_tokens == 0:
        shutil.rmtree(tmp)
        raise ValueError(f"empty corpus: no token in {files}")
    split = n_tokens - int(n_tokens * val_fraction)
    meta = {"format": SHARD_FORMAT, "dtype": dtype.name, "n_tokens": n_tokens, "split": split,
            "vocab_size": tokenizer.vocab_size, "files": files, "val_fraction": val_fraction}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    try:
        tmp.rename(folder)
    except OSError:  # another process finished the same shard set first
        shutil.rmtree(tmp, ignore_errors=True)


class BlockSampler:
    """Fixed-length blocks of a token array, in an order that is a function of the seed.

    Epoch e shifts the block grid by a random offset and visits the blocks in a random
    permutation, both drawn from numpy's generator seeded with (seed, e). Sequence
    number n of the run is therefore always the same block, which makes resuming
    exact and lets ranks of a distributed run take disjoint sequences.

    Args:
        tokens: Token ids (N,).
        block_size: Tokens per training example (the model sees block_size inputs and
            predicts block_size targets, so each example reads block_size + 1 ids).
        seed: Seed of the order.
        shuffle: Permute blocks (training) or keep them in order (evaluation).
    """

    def __init__(self, tokens: np.ndarray, block_size: int, *, seed: int = 0,
                 shuffle: bool = True) -> None:
        span = block_size + 1
        if len(tokens) < span + (block_size if shuffle else 0):
            raise ValueError(
                f"{len(tokens)} tokens are too few for blocks of {block_size}; use a smaller "
                "block_size or a larger corpus / val_fraction"
            )
        self.tokens, self.block_size, self.seed, self.shuffle = tokens, block_size, seed, shuffle
        # Leave room for the per-epoch offset (< block_size) and the extra target token.
        room = len(tokens) - 1 - (block_size - 1 if shuffle else 0)
        self.blocks_per_epoch = room // block_size
        self._epoch: int | None = None
        self._order: np.ndarray = np.arange(self.blocks_per_epoch)
        self._offset = 0

    def _set_epoch(self, epoch: int) -> None:
        if epoch == self._epoch:
            return
        self._epoch = epoch
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch])
            self._offset = int(rng.integers(self.block_size))
            self._order = rng.permutation(self.blocks_per_epoch)

    def block(self, index: int) -> np.ndarray:
        """Sequence number `index` of the run: block_size + 1 token ids."""
        epoch, within = divmod(index, self.blocks_per_epoch)
        self._set_epoch(epoch)
        start = self._offset + int(self._order[within]) * self.block_size
        return np.asarray(self.tokens[start:start + self.block_size + 1], dtype=np.int64)

    def batch(self, first: int, count: int) -> torch.Tensor:
        """Sequences first .. first + count - 1 stacked: (count, block_size + 1) int64."""
        return torch.from_numpy(np.stack([self.block(first + i) for i in range(count)]))
