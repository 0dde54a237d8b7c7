"""Key/value caches: the decoder's own, and the cross-attention context of a source.

`KVCache` is static and preallocated (one buffer per layer, written in place);
`CrossContext` holds the keys and values an encoder-decoder computes once per source.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class CrossContext:
    """What every decoder layer's cross-attention reads: the encoder output, projected.

    Computed once per source (`Seq2SeqLM.cross_context`) and read by every decode step,
    so a step costs its query projection and one attention per layer. Without the
    cache (`memory` set, no keys or values) every step projects the encoder output
    again: the same numbers, at a cost per step (a check on the cache).

    Attributes:
        keys: One tensor (B, Hkv, S, D) per decoder layer ([] when not cached).
        values: Likewise.
        mask: (B, 1, 1, S) boolean, True at real source tokens; None if none is padding.
        memory: The encoder output (B, S, d_model) when keys and values are not cached.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor | None = None
    memory: torch.Tensor | None = None

    @property
    def rows(self) -> int:
        """B, the number of sources."""
        return (self.keys[0] if self.keys else self.memory).shape[0]

    @property
    def length(self) -> int:
        """S, the (padded) source length."""
        return self.keys[0].shape[2] if self.keys else self.memory.shape[1]

    def layer(self, index: int, attn: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer `index`'s keys and values (B, Hkv, S, D); `attn` projects them if not cached."""
        if self.keys:
            return self.keys[index], self.values[index]
        return attn.project_kv(self.memory)

    def select(self, rows: torch.Tensor) -> CrossContext:
        """The rows `rows` (LongTensor), in that order (beams, or a batch's survivors)."""
        return CrossContext(
            [k.index_select(0, rows) for k in self.keys],
            [v.index_select(0, rows) for v in self.values],
            None if self.mask is None else self.mask.index_select(0, rows),
            None if self.memory is None else self.memory.index_select(0, rows),
        )

    def trim(self, length: int) -> CrossContext:
        """The first `length` source positions (a lone source without its padding)."""
        return CrossContext(
            [k[:, :, :length] for k in self.keys], [v[:, :, :length] for v in self.values],
            None if self.mask is None else self.mask[..., :length],
            None if self.memory is None else self.memory[:, :length],
        )

    @classmethod
    def stack(cls, rows: list[CrossContext]) -> CrossContext:
        """One batch of contexts (sources of any lengths, right-padded; all cached or none)."""
        S = max(r.length for r in rows)

        def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
            return torch.nn.functional.pad(t, (0, 0) * (t.ndim - 1 - dim) + (0, S - t.shape[dim]))

        masks = []
        for r in rows:
            real = (r.mask.reshape(r.mask.shape[0], -1) if r.mask is not None
                    else torch.ones(r.rows, r.length, dtype=torch.bool))
            masks.append(torch.nn.functional.pad(real, (0, S - real.shape[1])))
        n_layers = len(rows[0].keys)
        if any(len(r.keys) != n_layers for r in rows):
            raise ValueError("CrossContext.stack: mix of cached and uncached contexts")
        return cls(
            [torch.cat([pad(r.keys[i], 2) for r in rows]) for i in range(n_layers)],
            [torch.cat([pad(r.values[i], 2) for r in rows]) for i in range(n_layers)],
            torch.cat(masks)[:, None, None, :],
            None if rows[0].memory is None else torch.cat([pad(r.memory, 1) for r in rows]),
        )


class KVCache:
    """Keys and values of every layer for up to `max_len` tokens of `batch` sequences.

    Each row keeps its own length, so rows of different lengths (a batch of prompts of
    different sizes, or sequences joining a running batch) need no padding in the
    cache: row b's next token goes to slot `lengths[b]`. While all rows have the same
    length the cache writes plain slices (the fast path of batch-1 decoding).

    Args:
        n_layers: Number of attention layers.
        batch: Number of sequences (rows).
        max_len: Slots per row (prompt + generated tokens).
        n_kv_heads: Key/value heads per layer.
        head_dim: Size of one head.
        dtype: Storage dtype (the model's activation dtype).
        device: Where the buffers live.
        key_multiple: Decode steps read a number of slots rounded up to a multiple of
            this (the attention mask hides the extra slots), so that attention sees
            few distinct key lengths. oneDNN JIT-compiles a bfloat16 matmul primitive
            of ~1.3 MB for every new shape and keeps it: with one key length per
            token, a bfloat16 model's RSS grew by 166 MB per 128 generated tokens.
    """

    def __init__(
        self,
        n_layers: int,
        batch: int,
        max_len: int,
        n_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        key_multiple: int = 1,
    ) -> None:
        if key_multiple < 1:
            raise ValueError(f"key_multiple must be >= 1, got {key_multiple}")
        shape = (batch, n_kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.batch, self.max_len = batch, max_len
        self.lengths = torch.zeros(batch, dtype=torch.long, device=device)  # (B,)
        self.uniform: int | None = 0  # the common length while all rows agree
        self.longest = 0  # max(lengths), kept as a Python int to slice without a sync
        self.key_multiple = key_multiple
        self.cross: CrossContext | None = None  # an encoder-decoder's source, per row

    @property
    def length(self) -> int:
        """The common length of all rows (ValueError once rows differ)."""
        if self.uniform is None:
            raise ValueError("cache rows have different lengths; read cache.lengths")
        return self.uniform

    def key_length(self, new: int) -> int:
        """How many slots `update` returns for `new` tokens (S of the attention).

        longest + new, rounded up to a multiple of `key_multiple` (at most max_len)
        once something is cached; a prompt into an empty cache sees exactly its keys.
        """
        end = self.longest + new
        if self.longest == 0 or self.key_multiple == 1:
            return end
        return min(-(-end // self.key_multiple) * self.key_multiple, self.max_len)

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's k, v (B, Hkv, T, D) after each row's filled slots.

        Returns:
            Keys and values of slots [0, key_length(T)), each (B, Hkv, S, D). Slots past
            a row's own length hold stale values; the attention mask hides them.
            The caller calls `advance(T)` once per forward pass, after the last layer.
        """
        T = k.shape[2]
        end, read = self.longest + T, self.key_length(T)
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} tokens per row; {end} were needed")
        if self.uniform is not None:
            self.keys[layer][:, :, self.uniform:end] = k
            self.values[layer][:, :, self.uniform:end] = v
        else:
            slots = self.lengths[:, None] + torch.arange(T, device=k.device)  # (B, T)
            rows = torch.arange(self.batch, device=k.device)[:, None]  # (B, 1)
            # Advanced indices around a slice put their dims first: (B, T, Hkv, D).
            self.keys[layer][rows, :, slots] = k.transpose(1, 2)
            self.values[layer][rows, :, slots] = v.transpose(1, 2)
        return self.keys[layer][:, :, :read], self.values[layer][:, :, :read]

    def advance(self, n: int) -> None:
        """Mark `n` more slots filled in every row."""
        self.lengths += n
        self.longest += n
        if self.uniform is not None:
            self.uniform += n

    def set_lengths(self, lengths: torch.Tensor | list[int]) -> None:
        """Declare each row's filled length (after a right-padded prefill, say)."""
        lengths = torch.as_tensor(lengths, dtype=torch.long, device=self.lengths.device)
        if lengths.shape != (self.batch,):
            raise ValueError(f"lengths must have shape ({self.batch},), got {tuple(lengths.shape)}")
        self.lengths = lengths.clone()
        values = lengths.tolist()
        self.longest = max(values)
        self.uniform = values[0] if len(set(values)) == 1 else None

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only `rows` (LongTensor of row indices), in that order (beam search)."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]
        if self.cross is not None:
            self.cross = self.cross.select(rows)
        self.batch = len(rows)
        self.set_lengths(self.lengths.index_select(0, rows))

    def write_row(self, row: int, other: KVCache, other_row: int = 0) -> None:
        """Copy the filled slots of `other`'s row `other_row` into row `row`; set its length.

        A sequence prefilled in a cache of its own joins a running batch this way
        (continuous batching); the other rows are left untouched.
        """
        n = int(other.lengths[other_row])
        if n > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} tokens per row; the row has {n}")
        for mine, theirs in zip(self.keys + self.values, other.keys + other.values, strict=True):
            mine[row, :, :n] = theirs[other_row, :, :n]
        lengths = self.lengths.clone()
        lengths[row] = n
        self.set_lengths(lengths)

    def narrow_rows(self, n: int) -> KVCache:
        """A cache over the first `n` rows that shares this one's storage (writes go through).

        Lengths are copied, not shared: set them on the view before using it.
        """
        view = KVCache.__new__(KVCache)
        view.keys = [k[:n] for k in self.keys]
        view.values = [v[:n] for v in self.values]
        view.batch, view.max_len, view.key_multiple = n, self.max_len, self.key_multiple
        view.cross = None if self.cross is None else self.cross.select(torch.arange(n))
        view.lengths = self.lengths[:n].clone()
        view.set_lengths(view.lengths)
        return view
