"""Pseudo-log-likelihood of a masked LM over the tokens two sentences share (CrowS-Pairs).

Nangia et al. (2020), `metric.py` of github.com/nyu-mll/crows-pairs: the two sentences
of a pair are tokenized, `difflib.SequenceMatcher` over their token ids finds the
tokens they share (the "unmodified" tokens), and each sentence's score is the sum,
over its shared tokens but the first and last (the [CLS] and [SEP] a BERT tokenizer
adds), of log P(token) with that one token replaced by the mask token. Scoring only
the shared tokens conditions both sentences on the same words, so the score compares
how likely the context is given the modified words (e.g. the group named), not how
frequent those words are.

Every masked copy of every sentence is scored in batches (right-padded, with an
attention mask), and the masked-LM head runs only on the masked positions.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from zenlm.errors import CheckpointError
from zenlm.io.hf import load_mlm_head
from zenlm.models.encoder import EncoderModel
from zenlm.models.heads import MaskedLM
from zenlm.tokenizer import Tokenizer

#: The mask token each family's transformers tokenizer has when its config names none.
DEFAULT_MASK_TOKENS = {"bert": "[MASK]", "roberta": "<mask>"}
#: Where a Hugging Face *ForMaskedLM checkpoint keeps its head, per family.
HEAD_TENSORS = {"bert": "cls.predictions.*", "roberta": "lm_head.*"}


def shared_positions(first: Sequence[int], second: Sequence[int]) -> tuple[list[int], list[int]]:
    """Positions of the tokens two sequences share, in order (metric.py's `get_span`).

    Args:
        first: Token ids of one sentence.
        second: Token ids of the other.

    Returns:
        (positions in first, positions in second) of the `equal` blocks of
        `difflib.SequenceMatcher(None, first, second)`; both lists have one length.
    """
    matcher = difflib.SequenceMatcher(None, list(first), list(second))
    in_first: list[int] = []
    in_second: list[int] = []
    for tag, a_start, a_end, b_start, b_end in matcher.get_opcodes():
        if tag == "equal":
            in_first += range(a_start, a_end)
            in_second += range(b_start, b_end)
    return in_first, in_second


def pair_positions(first: Sequence[int], second: Sequence[int]) -> tuple[list[int], list[int]]:
    """The positions metric.py masks: the shared ones but the first and the last.

    metric.py loops `for i in range(1, N - 1)` over the N shared positions, skipping
    the [CLS] and [SEP] its tokenizers add at the two ends.
    """
    in_first, in_second = shared_positions(first, second)
    return in_first[1:-1], in_second[1:-1]


def load_masked_lm(encoder: EncoderModel, folder: str | Path) -> MaskedLM:
    """The encoder with the masked-LM head its folder holds.

    Raises:
        CheckpointError: the folder has no trained masked-LM head. A sentence-embedding
            export (e.g. sentence-transformers' all-MiniLM-L6-v2) stores only the
            BertModel; a new head would be random, and its scores meaningless.
    """
    family = encoder.config.hf_model_type
    try:
        head = load_mlm_head(folder, encoder)
    except (CheckpointError, KeyError) as exc:
        raise CheckpointError(
            f"{folder} cannot be scored by pseudo-log-likelihood: it holds no trained "
            f"masked-LM head (no {HEAD_TENSORS.get(family, 'masked-LM head')} tensors in its "
            "safetensors). Its weights are the encoder alone (a base model, as "
            "sentence-embedding models are saved); CrowS-Pairs' masked-LM score needs "
            "the head the encoder was pretrained with, and a new one would be random. "
            "Give a *ForMaskedLM folder (e.g. bert-base-uncased as transformers saves it) "
            "or a causal LM"
        ) from exc
    return MaskedLM(encoder, head).eval()


def mask_token_id(tokenizer: Tokenizer, folder: str | Path, hf_model_type: str) -> int:
    """Id of the mask token.

    The token is tokenizer_config.json's or special_tokens_map.json's `mask_token`,
    else the family's transformers default ([MASK] for BERT, <mask> for RoBERTa).

    Raises:
        ValueError: no mask token is named and the family's default is not in the
            vocabulary.
    """
    token = _configured_mask_token(Path(folder))
    token = token or DEFAULT_MASK_TOKENS.get(hf_model_type)
    found = tokenizer.token_to_id(token) if token else None
    if found is None:
        raise ValueError(f"{folder}: no mask token (looked for {token!r} in the vocabulary, "
                         "and for mask_token in tokenizer_config.json and "
                         "special_tokens_map.json); a masked LM needs one")
    return found


def _configured_mask_token(folder: Path) -> str | None:
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = folder / name
        if not path.is_file():
            continue
        value = json.loads(path.read_text(encoding="utf-8")).get("mask_token")
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str):
            return value
    return None


@torch.inference_mode()
def pseudo_log_likelihoods(
    model: MaskedLM, sequences: Sequence[Sequence[int]], positions: Sequence[Sequence[int]],
    mask_id: int, *, batch_size: int = 64, pad_id: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[float]:
    """Each sequence's sum of log P(token | the sequence with that token masked).

    Args:
        model: Encoder + masked-LM head.
        sequences: Token ids of each sentence (with its special tokens).
        positions: For each sequence, the positions to mask one at a time.
        mask_id: Id of the mask token.
        batch_size: Masked copies per forward pass.
        pad_id: Id written in padding (hidden by the attention mask).
        progress: Called with the number of masked copies scored after each batch.

    Returns:
        One float per sequence (0.0 for a sequence with no positions).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    copies = [(s, p) for s, where in enumerate(positions) for p in where]
    totals = [0.0] * len(sequences)
    for start in range(0, len(copies), batch_size):
        chunk = copies[start:start + batch_size]
        values = _score_copies(model, sequences, chunk, mask_id, pad_id)
        for (s, _), value in zip(chunk, values, strict=True):
            totals[s] += value  # Python floats: float64 sums, as metric.py's `.item()` adds
        if progress is not None:
            progress(len(chunk))
    return totals


def _score_copies(
    model: MaskedLM, sequences: Sequence[Sequence[int]], chunk: list[tuple[int, int]],
    mask_id: int, pad_id: int,
) -> list[float]:
    """Log P(original token) at the masked position of each (sequence, position) copy."""
    width = max(len(sequences[s]) for s, _ in chunk)
    ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)  # (R, T)
    attention = torch.zeros(len(chunk), width, dtype=torch.long)  # (R, T)
    for row, (s, _) in enumerate(chunk):
        ids[row, : len(sequences[s])] = torch.tensor(sequences[s])
        attention[row, : len(sequences[s])] = 1
    where = torch.tensor([p for _, p in chunk])  # (R,)
    rows = torch.arange(len(chunk))
    targets = ids[rows, where].clone()  # (R,)
    ids[rows, where] = mask_id
    hidden = model.encoder(ids, attention_mask=attention)  # (R, T, d)
    logits = model.head(hidden[rows, where]).float()  # (R, V): the masked positions only
    return F.log_softmax(logits, dim=-1)[rows, targets].tolist()
