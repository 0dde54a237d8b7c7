"""Train a tokenizer with Hugging Face `tokenizers`: byte-level BPE, WordPiece, Unigram, chars.

Each kind is the recipe its family uses:

- ``bpe``: GPT-2 / Llama-3 style byte-level BPE. Any text round-trips exactly (bytes
  are the base alphabet); Chinese characters, 3 bytes each in UTF-8, are merged into
  whole-character tokens once they are frequent enough.
- ``wordpiece``: BERT's. The BERT pre-tokenizer puts every CJK ideograph on its own,
  which is how BERT-Chinese tokenizes.
- ``unigram``: SentencePiece-style Unigram over Metaspace (``▁`` marks a word start).
- ``char``: one token per character seen in training (nanoGPT's Shakespeare-char).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Literal

from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as HFTokenizer

from zenlm.tokenizer import Tokenizer

TokenizerKind = Literal["bpe", "wordpiece", "unigram", "char"]
KINDS: tuple[str, ...] = ("bpe", "wordpiece", "unigram", "char")

#: Special tokens of each kind: (bos, eos, pad, unk, extra). BERT needs [CLS]/[SEP]/[MASK].
_SPECIALS: dict[str, dict[str, str | None]] = {
    "bpe": {"bos": "<|bos|>", "eos": "<|endoftext|>", "pad": "<|pad|>", "unk": None},
    "char": {"bos": "<|bos|>", "eos": "<|endoftext|>", "pad": "<|pad|>", "unk": "<|unk|>"},
    "unigram": {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"},
    "wordpiece": {"bos": "[CLS]", "eos": "[SEP]", "pad": "[PAD]", "unk": "[UNK]"},
}


def special_tokens(kind: str) -> list[str]:
    """The special tokens `train_tokenizer` adds for `kind`, lowest ids first."""
    found = [t for t in _SPECIALS[kind].values() if t is not None]
    return found + (["[MASK]"] if kind == "wordpiece" else [])


def train_tokenizer(
    texts: Iterable[str],
    *,
    kind: TokenizerKind = "bpe",
    vocab_size: int = 8192,
    min_frequency: int = 2,
    extra_special_tokens: Iterable[str] = (),
) -> Tokenizer:
    """Train a tokenizer of `kind` on `texts` (any iterable; it is streamed once).

    Args:
        texts: Documents.
        kind: bpe | wordpiece | unigram | char.
        vocab_size: Largest vocabulary, special tokens included (ignored for `char`,
            whose vocabulary is every character seen).
        min_frequency: Merges/pieces seen fewer times are not learnt (bpe, wordpiece).
        extra_special_tokens: More special tokens (e.g. sentinels for span corruption).

    Returns:
        A `zenlm.Tokenizer` with bos/eos/pad/unk set; `save(folder)` writes tokenizer.json.

    Raises:
        ValueError: an unknown kind, or a vocabulary too small for the specials.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(KINDS)}")
    # dict.fromkeys: "[MASK]" asked for again (WordPiece has it already) is kept once, in place
    specials = list(dict.fromkeys(special_tokens(kind) + list(extra_special_tokens)))
    if kind != "char" and vocab_size <= len(specials) + (256 if kind == "bpe" else 0):
        raise ValueError(f"vocab_size={vocab_size} is too small for a {kind} tokenizer")
    backend, trainer = _BUILDERS[kind](vocab_size, min_frequency, specials)
    try:
        backend.train_from_iterator(_non_empty(texts), trainer=trainer)
    except Exception as exc:  # the Rust trainer raises a bare Exception
        raise ValueError(f"training a {kind} tokenizer of vocab_size={vocab_size} failed: "
                         f"{exc} (a Unigram vocabulary must hold every distinct character)"
                         ) from exc
    if backend.get_vocab_size() <= len(specials):
        raise ValueError("empty corpus: the tokenizer learnt no token from the texts given")
    names = _SPECIALS[kind]
    if kind == "wordpiece":
        _bert_post_processor(backend)
    return Tokenizer(backend, bos_token=names["bos"], eos_token=names["eos"],
                     pad_token=names["pad"], unk_token=names["unk"])


def _non_empty(texts: Iterable[str]) -> Iterator[str]:
    return (t for t in texts if t)


def _bpe(vocab_size: int, min_frequency: int, specials: list[str]):  # noqa: ANN202
    backend = HFTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    return backend, trainer


def _wordpiece(vocab_size: int, min_frequency: int, specials: list[str]):  # noqa: ANN202
    backend = HFTokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=False)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
        show_progress=False,
    )
    return backend, trainer


def _bert_post_processor(backend: HFTokenizer) -> None:
    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )


def _unigram(vocab_size: int, min_frequency: int, specials: list[str]):  # noqa: ANN202
    backend = HFTokenizer(models.Unigram())
    backend.normalizer = normalizers.NFKC()
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>", show_progress=False,
    )
    return backend, trainer


def _char(vocab_size: int, min_frequency: int, specials: list[str]):  # noqa: ANN202
    backend = HFTokenizer(models.WordLevel(unk_token="<|unk|>"))
    # Every character (newlines included) is its own pre-token, and decoding glues them.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    trainer = trainers.WordLevelTrainer(
        vocab_size=1 << 30, min_frequency=1, special_tokens=specials, show_progress=False,
    )
    return backend, trainer


_BUILDERS = {"bpe": _bpe, "wordpiece": _wordpiece, "unigram": _unigram, "char": _char}
