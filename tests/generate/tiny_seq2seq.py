"""A tiny random Marian folder with a byte-level BPE tokenizer, saved by transformers."""

from __future__ import annotations

from pathlib import Path

import torch

from ..models.tiny_hf import randomize
from ..test_tokenizer import SAMPLES
from ..tiny_tokenizer import byte_level_bpe


def tiny_marian_folder(folder: Path, seed: int = 3):  # noqa: ANN201
    """Save a 2+2-layer random Marian (</s> = 1 ends, <s> = 0 starts and pads) in `folder`.

    Returns:
        (the transformers model, its PreTrainedTokenizerFast).
    """
    import transformers

    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=byte_level_bpe(SAMPLES * 20), bos_token="<s>", eos_token="</s>",
        pad_token="<s>")
    tokenizer.save_pretrained(folder)
    config = transformers.MarianConfig(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=48,
        decoder_ffn_dim=48, max_position_embeddings=128, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0, forced_eos_token_id=None)
    model = transformers.MarianMTModel(config)
    randomize(model, seed=seed)
    with torch.no_grad():
        for module in model.modules():  # the sinusoidal tables are fixed, not weights
            if hasattr(module, "create_weight"):
                module.weight.copy_(module.create_weight())
    model.eval().save_pretrained(folder)
    return model, tokenizer
