"""GGUF tokenizers: `tokenizer.ggml.*` metadata <-> a zenlm `Tokenizer` (HF `tokenizers`).

Reading rebuilds what transformers' GGUF converter builds from the same metadata: a
GPT-2-style byte-level BPE (llama.cpp's "gpt2" model, with the split regex its
`tokenizer.ggml.pre` names) or a SentencePiece BPE with byte fallback ("llama").
Writing stores a byte-level BPE as llama.cpp's "gpt2" tokenizer model.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import tokenizers
from gguf import GGUFWriter
from gguf.constants import TokenType
from tokenizers import AddedToken, Regex, decoders, pre_tokenizers, processors
from tokenizers.models import BPE

from zenlm.errors import CheckpointError, UnsupportedModelError
from zenlm.io.gguf.reader import GGUFHeader, meta
from zenlm.tokenizer import Tokenizer

__all__ = ["SUPPORTED_TOKENIZER_MODELS", "build_tokenizer", "write_tokenizer"]

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


def build_tokenizer(header: GGUFHeader) -> Tokenizer:
    """The tokenizer the `tokenizer.*` metadata describes (with BOS/EOS and chat template)."""
    model = meta(header, "tokenizer.ggml.model", str)
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
    add_bos = meta(header, "tokenizer.ggml.add_bos_token", bool, model == "llama")
    add_eos = meta(header, "tokenizer.ggml.add_eos_token", bool, False)
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
        chat_template=meta(header, "tokenizer.chat_template", str, None),
        add_bos=bos is not None,
    )


def _vocabulary(header: GGUFHeader) -> _Vocabulary:
    tokens = meta(header, "tokenizer.ggml.tokens", list)
    types = meta(header, "tokenizer.ggml.token_type", list, [TokenType.NORMAL] * len(tokens))
    scores = meta(header, "tokenizer.ggml.scores", list, None)
    merges = meta(header, "tokenizer.ggml.merges", list, None)
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
    index = meta(header, key, int, None)
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


def write_tokenizer(writer: GGUFWriter, tokenizer: Tokenizer, vocab_size: int) -> None:
    """Byte-level BPE as llama.cpp's "gpt2" tokenizer model: tokens, types, merges."""
    spec = json.loads(tokenizer.backend.to_str())
    if spec["model"]["type"] != "BPE" or (spec.get("pre_tokenizer") or {}).get("type") not in (
        "ByteLevel", "Sequence"
    ):
        raise UnsupportedModelError(
            "GGUF export needs a byte-level BPE tokenizer (zenlm tokenizer train --kind bpe); "
            f"this one is {spec['model']['type']}")
    special = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
    by_id = {i: tok for tok, i in tokenizer.backend.get_vocab(with_added_tokens=True).items()}
    tokens, types = [], []
    for index in range(vocab_size):
        if index in by_id:  # ids past the tokenizer (padded vocab) become unused slots
            tokens.append(by_id[index])
            types.append(TokenType.CONTROL if index in special else TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{index}]")
            types.append(TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # GPT-2 split regex, as ByteLevel(use_regex) splits
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for add, value in ((writer.add_bos_token_id, tokenizer.bos_token_id),
                       (writer.add_eos_token_id, tokenizer.eos_token_id),
                       (writer.add_pad_token_id, tokenizer.pad_token_id)):
        if value is not None:
            add(value)
    writer.add_add_bos_token(bool(tokenizer.add_bos))
