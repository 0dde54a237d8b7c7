"""Nearest tokens and analogies against numpy cosines on the embedding matrix read by safetensors."""

from __future__ import annotations

import numpy as np
import pytest
import tokenizers
from safetensors.numpy import load_file

from zenlm.explain.embeddings import analogy, neighbours, parse_analogy


@pytest.fixture(scope="module")
def table(minilm_folder):
    """MiniLM's word embeddings (V, d) float64 and its tokenizer, read without zenlm."""
    weights = load_file(str(minilm_folder / "model.safetensors"))
    name = next(k for k in weights if k.endswith("word_embeddings.weight"))
    backend = tokenizers.Tokenizer.from_file(str(minilm_folder / "tokenizer.json"))
    backend.no_padding()  # the file pads every text to 128
    return weights[name].astype(np.float64), backend


def _cosine_top(vector, matrix, exclude, k):
    sims = matrix @ vector / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(vector))
    sims[list(exclude)] = -np.inf
    order = np.argsort(-sims)[:k]
    return order.tolist(), sims[order]


@pytest.mark.parametrize("word", ["king", "tokenization"])  # one token; two pieces
def test_neighbours_equal_numpy_cosine(minilm_lm, table, word):
    matrix, backend = table
    pieces = backend.encode(word, add_special_tokens=False).ids
    expected_ids, expected_sims = _cosine_top(matrix[pieces].mean(0), matrix, pieces, 8)
    query, found = neighbours(word, minilm_lm.tokenizer, minilm_lm.model.embed.weight.detach(), 8)
    assert query.ids == pieces
    assert [i for i, _ in found] == expected_ids
    np.testing.assert_allclose([s for _, s in found], expected_sims, atol=1e-6)


def test_analogy_equals_numpy_3cosadd(minilm_lm, table):
    matrix, backend = table
    vectors, used = [], set()
    for word in ("man", "king", "woman"):
        ids = backend.encode(word, add_special_tokens=False).ids
        used.update(ids)
        v = matrix[ids].mean(0)
        vectors.append(v / np.linalg.norm(v))
    a, b, c = vectors
    expected_ids, expected_sims = _cosine_top(b - a + c, matrix, used, 5)
    _, found = analogy("man:king::woman", minilm_lm.tokenizer,
                       minilm_lm.model.embed.weight.detach(), 5)
    assert [i for i, _ in found] == expected_ids
    np.testing.assert_allclose([s for _, s in found], expected_sims, atol=1e-6)
    assert backend.id_to_token(found[0][0]) == "queen"


@pytest.mark.parametrize("text", ["man:king:woman", "man::king", "a:b::", ":b::c", "a:b::c:d"])
def test_wrong_analogy_format_is_refused(text):
    with pytest.raises(ValueError, match="a:b::c"):
        parse_analogy(text)


def test_word_outside_the_vocabulary_is_named(minilm_lm):
    with pytest.raises(ValueError, match="'🦄' is not in the vocabulary"):
        analogy("man:🦄::woman", minilm_lm.tokenizer, minilm_lm.model.embed.weight.detach())
