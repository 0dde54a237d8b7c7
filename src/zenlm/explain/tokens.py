"""Display strings of tokens, and the parts of a model explanations read."""

from __future__ import annotations

from typing import Any

from torch import nn

from zenlm.tasks.checkpoint import backbone_of


def token_string(tokenizer: Any, token_id: int) -> str:
    """How token `token_id` reads on its own: decoded, else its vocabulary entry.

    A byte-level piece that is part of a multi-byte character decodes to U+FFFD; its
    vocabulary entry (e.g. "Ã©") is shown instead.
    """
    text = tokenizer.decode([token_id])
    if not text or "\ufffd" in text:
        return tokenizer.backend.id_to_token(token_id) or f"<{token_id}>"
    return text


def token_strings(tokenizer: Any, ids: list[int]) -> list[str]:
    """`token_string` of each id."""
    return [token_string(tokenizer, i) for i in ids]


def special_ids(tokenizer: Any) -> set[int]:
    """Ids of the tokenizer's special tokens ([CLS], [SEP], <|im_start|>, ...)."""
    added = tokenizer.backend.get_added_tokens_decoder()
    return {index for index, token in added.items() if token.special}


def input_embedding(model: nn.Module) -> nn.Embedding:
    """The token embedding a model (LM, encoder, masked LM or task model) reads its ids with."""
    backbone = backbone_of(model)
    for candidate in (backbone, getattr(backbone, "encoder", None)):
        embed = getattr(candidate, "embed", None)
        if isinstance(embed, nn.Embedding):
            return embed
    raise ValueError(f"{type(model).__name__} has no token embedding (.embed) to explain")


def text_pieces(tokenizer: Any, text: str, ids: list[int]) -> list[str]:
    """The text cut at token boundaries, one piece per id, spaces kept with the next token.

    Joined, the ordinary tokens' pieces give back `text`; a special token shows as its
    own string. Falls back to `token_strings` when the tokenizer's offsets do not line up
    with `ids` (e.g. a BOS that zenlm adds on top of the backend).
    """
    encoding = tokenizer.backend.encode(text)
    if encoding.ids != ids:
        return token_strings(tokenizer, ids)
    special = special_ids(tokenizer)
    pieces, done = [], 0
    for token_id, (_, end) in zip(ids, encoding.offsets, strict=True):
        if token_id in special:  # set apart from the words: "[CLS] a film [SEP]"
            name = token_string(tokenizer, token_id)
            pieces.append(f"{name} " if not pieces else f" {name}")
            continue
        if end <= done:  # the rest of a character an earlier byte-level token began
            pieces.append("")
            continue
        pieces.append(text[done:end])
        done = end
    if pieces and done < len(text):
        pieces[-1] += text[done:]
    return pieces
