"""Negative log-likelihood of token windows under a decoder, batched.

The head is applied only to the positions whose next token is scored (llama.cpp's
procedure scores half of each chunk, so half the vocabulary projections are skipped);
log-softmax runs in float32 and the sums accumulate in float64.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from itertools import groupby

import numpy as np
import torch
from tqdm import tqdm

from zenlm.eval.windows import Tally, Window
from zenlm.models import DecoderLM

HEAD_ROWS = 256  # positions projected onto the vocabulary at once: (256, V) float32 logits


@torch.inference_mode()
def score_windows(
    model: DecoderLM, tokens: np.ndarray, windows: Sequence[Window], *,
    bos_id: int | None = None, batch_size: int = 4, progress: bool = True,
) -> tuple[Tally, float]:
    """Sum each window's scored tokens' NLL, running `batch_size` windows per forward pass.

    Windows of the same shape (length, score_from, bos) are batched together; in both
    procedures all windows but the first and last of a sliding window share one shape.

    Args:
        model: A decoder LM.
        tokens: The token stream (N,), any integer dtype (a memmap is fine).
        windows: The forward passes, in order.
        bos_id: The id written over a window's first token when `window.bos` is set.
        batch_size: Windows per forward pass.
        progress: Show a tqdm bar counting the tokens read (with tokens/s).

    Returns:
        The per-window sums (in `windows` order) and the seconds spent scoring.
    """
    tally = Tally()
    start = time.perf_counter()
    total = sum(w.length for w in windows)
    with tqdm(total=total, unit="tok", unit_scale=True, desc="perplexity",
              disable=not progress) as bar:
        for _, same in groupby(windows, key=lambda w: (w.length, w.score_from, w.bos)):
            group = list(same)
            for first in range(0, len(group), batch_size):
                batch = group[first:first + batch_size]
                for sums in _score_batch(model, tokens, batch, bos_id):
                    tally.add(*sums)
                bar.update(sum(w.length for w in batch))
    return tally, time.perf_counter() - start


def _score_batch(
    model: DecoderLM, tokens: np.ndarray, batch: Sequence[Window], bos_id: int | None
) -> list[tuple[float, float, int]]:
    """(sum NLL, sum NLL^2, count) of each window of one shape."""
    ids = torch.from_numpy(np.stack([np.asarray(tokens[w.start:w.end], dtype=np.int64)
                                     for w in batch]))  # (B, L)
    shape = batch[0]
    if shape.bos:
        if bos_id is None:
            raise ValueError("a window asks for BOS but the tokenizer has no BOS token")
        ids[:, 0] = bos_id
    hidden = model.hidden_states(ids)  # (B, L, d)
    # position p predicts token p + 1: scored tokens score_from .. L-1 read p = score_from-1 ..
    hidden = hidden[:, shape.score_from - 1:-1]  # (B, S, d)
    targets = ids[:, shape.score_from:]  # (B, S)
    return [_nll_sums(model, hidden[row], targets[row]) for row in range(len(batch))]


def _nll_sums(model: DecoderLM, hidden: torch.Tensor,
              targets: torch.Tensor) -> tuple[float, float, int]:
    """NLL sums of one window: hidden (S, d) predicts targets (S,)."""
    nll = torch.empty(len(targets), dtype=torch.float64)
    for lo in range(0, len(targets), HEAD_ROWS):
        hi = lo + HEAD_ROWS
        logits = model.lm_head(hidden[lo:hi]).float()  # (s, V)
        picked = logits.gather(1, targets[lo:hi, None])[:, 0]
        nll[lo:hi] = (torch.logsumexp(logits, dim=1) - picked).double()
    return float(nll.sum()), float((nll * nll).sum()), len(targets)
