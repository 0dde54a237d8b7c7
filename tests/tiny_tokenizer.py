"""A small byte-level BPE trained in the test run (no downloads): the tokenizer of tiny models."""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIALS = ("<s>", "</s>", "<|im_start|>", "<|im_end|>")


def byte_level_bpe(texts: Sequence[str], vocab_size: int = 400) -> Tokenizer:
    """Train a GPT-2-style byte-level BPE on `texts`, with ChatML's special tokens."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(list(texts), trainer)
    return backend
