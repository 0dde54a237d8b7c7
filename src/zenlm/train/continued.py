"""Continued pretraining: start from a pretrained model's weights, with the run's tokenizer.

`train.init_from` names a Hugging Face model folder (or a short name). Its architecture and
weights are the run's starting point. When the run's tokenizer differs from the model's own
(a new language, a new domain), the token embedding is re-made for the new vocabulary: rows
of tokens both vocabularies spell the same way (special tokens, digits, punctuation,
characters the old vocabulary had) are copied, the others are drawn from a Gaussian fitted to
the old rows, per dimension. The blocks keep what they learned (Artetxe et al., 2020, "On
the Cross-lingual Transferability of Monolingual Representations", learn new embeddings under
a pretrained body); masked-LM pretraining then teaches the new rows. A masked-LM run keeps
the folder's own masked-LM head when it has one and the vocabulary is unchanged.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from zenlm.config import ModelConfig, from_hf_config
from zenlm.io.hf import load_hf_model, load_mlm_head, read_config
from zenlm.io.resolve import resolve_model
from zenlm.models.build import replace_token_embedding
from zenlm.models.heads import MaskedLMHead
from zenlm.tokenizer import Tokenizer


@dataclasses.dataclass
class Continued:
    """A run's starting model, the folder it came from, and whether the vocabulary stayed."""

    model: nn.Module
    folder: Path
    vocab_kept: bool

    def mlm_head(self) -> MaskedLMHead | None:
        """The folder's own masked-LM head (tied to `model`), when it has one for this vocabulary.

        None for a folder without one (a BertModel, all-MiniLM-L6-v2) or when the run's
        tokenizer differs from the folder's (the head's output bias is per token): the run
        then starts a new head.

        Raises:
            CheckpointError: the folder's head is incomplete (not silently replaced).
        """
        if not self.vocab_kept:
            return None
        return load_mlm_head(self.folder, self.model, required=False)


def continued_backbone(source: str, tokenizer: Tokenizer, block_size: int,
                       seed: int) -> Continued:
    """`source`'s model in float32, its embedding fitted to `tokenizer`.

    Args:
        source: A model folder or short name (zenlm.io.resolve.resolve_model).
        tokenizer: The run's tokenizer.
        block_size: Tokens per training block (must fit the model's positions).
        seed: Seeds the new embedding rows.

    Raises:
        ValueError: a .gguf file, or blocks longer than the model's learned positions.
        CheckpointError: the folder is missing, corrupt or holds pickles only.
    """
    path = source_folder(source)
    model = load_hf_model(path).train()
    config: ModelConfig = model.config
    if config.positions == "learned" and block_size > config.max_seq_len:
        raise ValueError(f"data.block_size={block_size} exceeds {source}'s "
                         f"{config.max_seq_len} learned positions")
    old_vocab = Tokenizer.from_folder(path).backend.get_vocab(with_added_tokens=True)
    new_vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
    if old_vocab != new_vocab:
        generator = torch.Generator().manual_seed(seed)
        replace_token_embedding(
            model, transfer_rows(model.embed.weight.detach(), old_vocab, new_vocab, generator))
        head = getattr(model, "lm_head", None)
        if head is not None and not config.tie_embeddings:
            head.weight = nn.Parameter(
                transfer_rows(head.weight.detach(), old_vocab, new_vocab, generator))
    model.config = dataclasses.replace(
        config, vocab_size=len(new_vocab), pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return Continued(model, path, vocab_kept=old_vocab == new_vocab)


def source_arch(source: str) -> str:
    """"encoder", "decoder" or "encoder-decoder": the architecture of `source`'s config.json."""
    return from_hf_config(read_config(source_folder(source))).arch


def source_folder(source: str) -> Path:
    """The model folder `source` names.

    Raises:
        ValueError: `source` is a .gguf file (its tokenizer and names are not a folder's).
        CheckpointError: `source` names nothing (zenlm.io.resolve.resolve_model).
    """
    path = resolve_model(source)
    if path.suffix.lower() == ".gguf":
        raise ValueError(f"train.init_from={source!r} is a .gguf file; give a Hugging Face "
                         "model folder (config.json and safetensors)")
    return path


def transfer_rows(old: torch.Tensor, old_vocab: dict[str, int], new_vocab: dict[str, int],
                  generator: torch.Generator) -> torch.Tensor:
    """A (len(new_vocab), d) matrix: old rows (V_old, d) of shared tokens, fitted noise elsewhere.

    A new token's row is drawn per dimension from N(mean, std) of the old rows, so new rows
    start as typical embeddings: neither all equal (nothing to tell apart) nor of another scale.
    """
    old = old.float()
    mean, std = old.mean(0), old.std(0)
    rows = mean + std * torch.randn(len(new_vocab), old.shape[1], generator=generator)
    for token, new_id in new_vocab.items():
        old_id = old_vocab.get(token)
        if old_id is not None and old_id < old.shape[0]:
            rows[new_id] = old[old_id]
    return rows
