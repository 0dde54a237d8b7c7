"""Nearest tokens and vector-offset analogies in a model's input embedding matrix.

The classic word-vector exercises (Mikolov et al. 2013), on what a Transformer has
instead of word vectors: the rows of its token embedding (V, d). See `NOTE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

#: What the page and the command print next to every result.
NOTE = (
    "Input embeddings are not contextual: each row is the vector a token has before any "
    "layer has seen its neighbours, so 'bank' has one vector for rivers and money alike; "
    "the model's meaning of a word in context lives in its hidden states, not here. The "
    "vocabulary holds subword tokens, not words: a word that splits into several tokens is "
    "represented by the mean of its pieces' vectors, and the neighbours listed are single "
    "tokens (often pieces of words, e.g. '##ing', or a word with and without its leading "
    "space in byte-level BPE, where 'king' and ' king' are different tokens; a word is "
    "encoded exactly as typed, so quote a leading space to get the mid-sentence token)."
)


@dataclass
class Word:
    """A word as the model's vocabulary sees it."""

    text: str
    ids: list[int]
    pieces: list[str]
    vector: torch.Tensor  # (d,) float64, the mean of the pieces' rows


def word_vector(word: str, tokenizer: Any, weights: torch.Tensor) -> Word:
    """The (d,) vector of `word`: its token's row, or the mean of its pieces' rows.

    Raises:
        ValueError: the word is empty, or a piece of it is the unknown token (the
            vocabulary cannot spell it).
    """
    ids = tokenizer.encode(word, add_special_tokens=False) if word.strip() else []
    if not ids:
        raise ValueError(f"{word!r} encodes to no tokens; give a non-empty word")
    unk = tokenizer.token_to_id(tokenizer.unk_token) if tokenizer.unk_token else None
    if unk is not None and unk in ids:
        raise ValueError(f"{word!r} is not in the vocabulary: it encodes to the unknown token "
                         f"{tokenizer.unk_token!r}")
    pieces = [tokenizer.backend.id_to_token(i) for i in ids]
    return Word(word, ids, pieces, weights[ids].double().mean(dim=0))


def nearest(vector: torch.Tensor, weights: torch.Tensor, top: int,
            exclude: set[int]) -> list[tuple[int, float]]:
    """The `top` (token id, cosine similarity) closest to `vector` (d,) among rows of (V, d)."""
    table = weights.double()
    sims = table @ vector / (table.norm(dim=1) * vector.norm()).clamp(min=1e-12)  # (V,)
    if exclude:
        sims[list(exclude)] = float("-inf")
    values, indices = sims.topk(min(top, len(sims) - len(exclude)))
    return [(int(i), float(v)) for i, v in zip(indices, values, strict=True)]


def neighbours(word: str, tokenizer: Any, weights: torch.Tensor,
               top: int = 10) -> tuple[Word, list[tuple[int, float]]]:
    """`word`'s nearest tokens by cosine similarity (its own tokens left out)."""
    query = word_vector(word, tokenizer, weights)
    return query, nearest(query.vector, weights, top, set(query.ids))


def parse_analogy(text: str) -> tuple[str, str, str]:
    """"a:b::c" -> (a, b, c) (a is to b as c is to ?).

    Raises:
        ValueError: not three non-empty words in the form a:b::c.
    """
    left, sep, c = text.partition("::")
    a, colon, b = left.partition(":")
    if not (sep and colon) or not all(w.strip() for w in (a, b, c)) or ":" in b + c:
        raise ValueError(f"--analogy must look like a:b::c (man:king::woman), got {text!r}")
    return a, b, c


def analogy(text: str, tokenizer: Any, weights: torch.Tensor,
            top: int = 10) -> tuple[list[Word], list[tuple[int, float]]]:
    """a:b::c -> the tokens nearest to b - a + c (3CosAdd), the inputs' tokens left out.

    Each word's vector is unit-normalised first (Levy & Goldberg 2014's 3CosAdd), so no
    word dominates the offset by its length.
    """
    words = [word_vector(w, tokenizer, weights) for w in parse_analogy(text)]
    a, b, c = (w.vector / w.vector.norm().clamp(min=1e-12) for w in words)
    exclude = {i for w in words for i in w.ids}
    return words, nearest(b - a + c, weights, top, exclude)
