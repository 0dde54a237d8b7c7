"""`zenlm evaluate --task lm`: perplexity of a causal LM on a text file or token shards.

Two documented procedures (see `zenlm.eval.windows` and docs/evaluate.md):
`--procedure sliding` (transformers' sliding window, the default) and
`--procedure llama` (llama.cpp's `llama-perplexity`, with its "± error").

Torch and the model are imported inside `run`, so building the command line stays fast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from zenlm.eval.registry import Evaluation
from zenlm.eval.report import Figure, Report, Table
from zenlm.eval.windows import Tally, Window, llama_chunks, sliding_windows

PROCEDURES = ("sliding", "llama")
SPLITS = ("val", "train", "all")
DEFAULT_CONTEXT = 512
TABLE_ROWS = 20  # windows listed in the Markdown table (evenly spaced when there are more)


def add_options(group: argparse._ArgumentGroup) -> None:
    """The options of `--task lm`."""
    group.add_argument("--procedure", choices=PROCEDURES, default="sliding",
                       help="lm: sliding = transformers' sliding window (default); llama = "
                       "llama-perplexity's chunks, second half scored, with ± error")
    group.add_argument("--context", type=int, default=None,
                       help="lm: tokens per forward pass (llama: n_ctx; default 512, or the "
                       "model's context if shorter)")
    group.add_argument("--stride", type=int, default=None,
                       help="lm: sliding window step in tokens (default: --context / 2)")
    group.add_argument("--batch-size", type=int, default=4,
                       help="lm: windows per forward pass (default 4)")
    group.add_argument("--split", choices=SPLITS, default=None,
                       help="lm: part of a token shard folder to score (default val)")
    group.add_argument("--max-tokens", type=int, default=None,
                       help="lm: score only the first N tokens of the data")


def run(model: str, data: str | None, quantize: str = "none", *, procedure: str = "sliding",
        context: int | None = None, stride: int | None = None, batch_size: int = 4,
        split: str | None = None, max_tokens: int | None = None,
        progress: bool = True) -> Report:
    """Perplexity of `model` on `data` by `procedure`.

    Args:
        model: Model folder, .gguf file or short name (a decoder).
        data: A UTF-8 text file (tokenized whole, BOS first where the vocabulary adds
            one) or a `zenlm` token shard folder (meta.json + tokens.bin).
        quantize: Weights to score with (zenlm.load's modes; "none" = float32).
        procedure: "sliding" or "llama".
        context: Tokens per window (llama.cpp's n_ctx); default 512, or the model's
            context length if shorter.
        stride: Sliding window step (default context // 2; not used by "llama").
        batch_size: Windows per forward pass.
        split: Shard folders only: "val" (default), "train" or "all".
        max_tokens: Keep only the first max_tokens tokens of the stream.
        progress: Show a progress bar on stderr.

    Raises:
        ValueError: a bad option value, data too short or empty, or a model that is not
            a decoder; each message names the value.
    """
    _check_options(procedure, context, stride, batch_size, max_tokens)
    from zenlm.api import load
    from zenlm.eval.scoring import score_windows

    lm = load(model, quantize=quantize)
    _check_decoder(lm, model, context)
    context = context or min(DEFAULT_CONTEXT, lm.config.context_length)
    tokens, source = read_tokens(data, lm.tokenizer, split)
    if max_tokens is not None:
        tokens = tokens[:max_tokens]
    _check_ids(tokens, lm.config.vocab_size, data)
    bos = bool(lm.tokenizer.add_bos and lm.tokenizer.bos_token_id is not None)
    if procedure == "llama":
        windows = llama_chunks(len(tokens), context, bos)
    else:
        stride = context // 2 if stride is None else stride
        windows = sliding_windows(len(tokens), context, stride)
    tally, seconds = score_windows(lm.model, tokens, windows, bos_id=lm.tokenizer.bos_token_id,
                                   batch_size=batch_size, progress=progress)
    settings = {"procedure": procedure, "context": context, "stride": stride, "bos": bos,
                "model": model, "data": data, "source": source, "tokens": len(tokens),
                "max_tokens": max_tokens, "batch_size": batch_size, "quantize": quantize}
    return build_report(tally, windows, seconds, settings)


def _check_options(procedure: str, context: int | None, stride: int | None, batch_size: int,
                   max_tokens: int | None) -> None:
    if procedure not in PROCEDURES:
        raise ValueError(f"--procedure must be one of {', '.join(PROCEDURES)}, got {procedure!r}")
    if procedure == "llama" and stride is not None:
        raise ValueError(f"--stride {stride} is an option of --procedure sliding; --procedure "
                         "llama scores the second half of each n_ctx chunk")
    if context is not None and context < 2:
        raise ValueError(f"--context must be at least 2 tokens, got {context}")
    if stride is not None and not 0 < stride <= (context or DEFAULT_CONTEXT):
        raise ValueError(f"--stride must be in 1..--context ({context or DEFAULT_CONTEXT}), "
                         f"got {stride}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    if max_tokens is not None and max_tokens < 2:
        raise ValueError(f"--max-tokens must be at least 2, got {max_tokens}")


def _check_decoder(lm: Any, model: str, context: int | None) -> None:
    """Only a causal LM has next-token probabilities over the text alone."""
    from zenlm.models import DecoderLM

    if not isinstance(lm.model, DecoderLM):
        kind = type(lm.model).__name__
        raise ValueError(f"--model {model} is a {kind} ({lm.config.arch}), not a causal LM: "
                         "perplexity needs a decoder (GPT-2, Llama, Mistral, Qwen2, ...)")
    if context is not None and context > lm.config.context_length:
        raise ValueError(f"--context {context} is longer than {model}'s context of "
                         f"{lm.config.context_length} tokens")


def read_tokens(data: str | None, tokenizer: Any, split: str | None) -> tuple[np.ndarray, str]:
    """The token stream of `data` and what it was ("text" or "shards:<split>").

    A text file is read whole and tokenized once, as llama-perplexity does (BOS first
    where the vocabulary adds one); a shard folder's tokens get the same BOS.

    Raises:
        ValueError: no --data, an empty or non-UTF-8 file, --split with a text file.
        FileNotFoundError: `data` does not exist.
    """
    if data is None:
        raise ValueError("--task lm needs --data: a text file or a token shard folder")
    path = Path(data)
    if path.is_dir():
        return _shard_tokens(path, tokenizer, split or "val")
    if not path.is_file():
        raise FileNotFoundError(f"--data {data}: no such file or folder")
    if split is not None:
        raise ValueError(f"--split {split} applies to token shard folders; --data {data} "
                         "is a text file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"--data {data}: not UTF-8 text (byte {exc.start})") from exc
    if not text.strip():
        raise ValueError(f"--data {data} is empty: there is no text to score")
    return np.asarray(tokenizer.encode(text), dtype=np.int64), "text"


def _shard_tokens(folder: Path, tokenizer: Any, split: str) -> tuple[np.ndarray, str]:
    from zenlm.data.shards import ShardSet

    if not (folder / "meta.json").is_file():
        raise ValueError(f"--data {folder} is a folder without meta.json: give a text file "
                         "or a token shard folder (zenlm prepare / pretrain writes them)")
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    if meta.get("vocab_size") not in (None, tokenizer.vocab_size):
        raise ValueError(f"--data {folder} was tokenized with a vocabulary of "
                         f"{meta['vocab_size']} tokens; the model's tokenizer has "
                         f"{tokenizer.vocab_size}")
    shards = ShardSet.open(folder)
    tokens = {"val": shards.val, "train": shards.train, "all": shards.tokens}[split]
    if len(tokens) == 0:
        raise ValueError(f"--data {folder}: the {split} split holds no tokens; "
                         f"choose --split from {', '.join(SPLITS)}")
    if tokenizer.add_bos and tokenizer.bos_token_id is not None:
        tokens = np.concatenate([[tokenizer.bos_token_id], tokens]).astype(np.int64)
    return tokens, f"shards:{split}"


def _check_ids(tokens: np.ndarray, vocab_size: int, data: str | None) -> None:
    if len(tokens) and int(tokens.max()) >= vocab_size:
        raise ValueError(f"--data {data} holds token id {int(tokens.max())}, outside the "
                         f"model's vocabulary of {vocab_size}")


def build_report(tally: Tally, windows: list[Window], seconds: float,
                 settings: dict[str, Any]) -> Report:
    """Headline numbers, a table of windows and a plot of per-window perplexity."""
    read = sum(w.length for w in windows)
    metrics: dict[str, Any] = {"perplexity": tally.perplexity, "nll": tally.mean_nll}
    if settings["procedure"] == "llama":
        metrics["error"] = tally.error  # llama-perplexity's "PPL = x +/- error"
    metrics.update({"tokens_scored": tally.tokens, "windows": len(windows),
                    "tokens_read": read, "seconds": seconds,
                    "tokens_per_s": read / seconds if seconds > 0 else float("nan"),
                    "window_perplexity": tally.window_perplexity()})
    return Report("lm", metrics, settings, [_window_table(tally, windows)],
                  [_window_figure(tally, windows)])


def _window_table(tally: Tally, windows: list[Window]) -> Table:
    count = len(windows)
    rows = sorted({round(i * (count - 1) / (TABLE_ROWS - 1)) for i in range(TABLE_ROWS)}
                  if count > TABLE_ROWS else range(count))
    each, running = tally.window_perplexity(), tally.running_perplexity()
    title = "Windows" if count <= TABLE_ROWS else f"Windows ({len(rows)} of {count})"
    return Table(title, ["window", "first token", "tokens scored", "perplexity",
                         "running perplexity"],
                 [[i + 1, windows[i].start, tally.count[i], each[i], running[i]] for i in rows])


def _window_figure(tally: Tally, windows: list[Window]) -> Figure:
    starts = [w.start for w in windows]
    each, running = tally.window_perplexity(), tally.running_perplexity()

    def draw(axes: Any) -> None:
        axes.plot(starts, each, ".", markersize=3, alpha=0.6, label="window")
        axes.plot(starts, running, "-", label="running (all windows so far)")
        axes.set_xlabel("first token of the window")
        axes.set_ylabel("perplexity")
        axes.legend()

    return Figure("perplexity", "Perplexity per window", draw)


EVALUATION = Evaluation(
    name="lm",
    help="perplexity of a causal LM on a text file or token shards (sliding window or "
    "llama-perplexity's procedure)",
    add_options=add_options,
    run=run,
)
