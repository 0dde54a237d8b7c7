"""Text-to-text tasks on encoder-decoders: translation (and the mechanics summarization shares).

A pair becomes a source (its tokens, ending with the end-of-sequence token) and a
target: the labels are the target's tokens ending with end-of-sequence, the decoder
reads the start token and then the labels shifted right (teacher forcing). The loss
is label-smoothed cross-entropy over real target tokens. Evaluation generates (greedy
or beam search, through the one generation core) and scores detokenized text with
sacreBLEU. `SPEC` is the translate task.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zenlm.data.parallel import ParallelData, TextPair, read_parallel
from zenlm.eval.metrics import translation_scores
from zenlm.generate.beam import beam_search
from zenlm.generate.decode import GenerationConfig, generate_batch
from zenlm.models import Seq2SeqLM
from zenlm.tasks.batching import TensorBatch
from zenlm.tasks.collate import pad_ids
from zenlm.tasks.spec import Objective, TaskInfo, TaskSpec, text_input
from zenlm.train.objectives import IGNORE, seq2seq_cross_entropy

log = logging.getLogger(__name__)

#: Settings of a text-to-text task kept in `TaskInfo.options` (defaults here).
DEFAULT_OPTIONS: dict[str, Any] = {
    "label_smoothing": 0.1,  # Vaswani et al. 2017; what fairseq's Transformer recipes use
    "num_beams": 1,  # evaluation and prediction; `zenlm evaluate --num-beams` overrides
    "length_penalty": 1.0,
    "max_new_tokens": 128,
    "long_inputs": "truncate",  # or "error": sources/targets past max_length
}


@dataclass
class PairFeature:
    """One encoded pair: source ids (ending in EOS) and target labels (ending in EOS)."""

    ids: list[int]
    labels: list[int]


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text` with the tokenizer's own specials, ending with EOS.

    BART's tokenizer adds `<s> ... </s>`, T5's and Marian's `... </s>`; a tokenizer
    trained by zenlm adds nothing, and gets its EOS appended here.
    """
    ids = tokenizer.encode(text)
    eos = tokenizer.eos_token_id
    if eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
    return ids


def encode_pairs(tokenizer: Any, pairs: Sequence[TextPair], info: TaskInfo, *,
                 labelled: bool = True) -> list[PairFeature]:
    """Features of `pairs`, cut to `info.max_length` tokens per side (or refused).

    Raises:
        ValueError: with options["long_inputs"] == "error", a side longer than max_length
            (named by its line).
    """
    limit, policy = info.max_length, info.options.get("long_inputs", "truncate")
    features, cut, texts = [], 0, 0
    for pair in pairs:
        sides = [encode_text(tokenizer, pair.source)]
        if labelled and pair.target is not None:
            sides.append(encode_text(tokenizer, pair.target))
        texts += len(sides)
        for ids in sides:
            if len(ids) > limit:
                if policy == "error":
                    raise ValueError(f"line {pair.line}: {len(ids)} tokens, more than "
                                     f"max_length={limit} (or set long_inputs=truncate)")
                cut += 1
                ids[limit - 1:] = ids[-1:]  # keep the final EOS
        features.append(PairFeature(sides[0], sides[1] if len(sides) > 1 else []))
    if cut:
        log.warning("%d of %d texts (sources and targets) were longer than max_length=%d "
                    "tokens and were truncated", cut, texts, limit)
    return features


def collate_pairs(features: list[PairFeature], pad_id: int) -> TensorBatch:
    """TensorBatch: src_ids, src_mask (B, S); labels (B, T), IGNORE at padding."""
    src_ids, src_mask = pad_ids([f.ids for f in features], pad_id)
    labels, real = pad_ids([f.labels for f in features], pad_id)
    return TensorBatch(src_ids=src_ids, src_mask=src_mask,
                       labels=labels.masked_fill(real == 0, IGNORE))


def seq2seq_loss(model: Seq2SeqLM, batch: TensorBatch, label_smoothing: float = 0.0
                 ) -> torch.Tensor:
    """Mean label-smoothed cross-entropy over real target tokens (teacher forcing)."""
    return seq2seq_cross_entropy(model, batch.src_ids, batch.src_mask, batch.labels,
                                 start_id=model.start_id, label_smoothing=label_smoothing)


def generation_config(tokenizer: Any, info: TaskInfo, model: Seq2SeqLM,
                      **overrides: Any) -> GenerationConfig:
    """Greedy or beam decoding that stops at EOS, as `info.options` says."""
    options = {**DEFAULT_OPTIONS, **info.options, **overrides}
    eos = tokenizer.eos_token_id
    if eos is None:
        eos = model.config.eos_token_id
    return GenerationConfig(
        max_new_tokens=int(options["max_new_tokens"]), temperature=0.0,
        num_beams=int(options["num_beams"]), length_penalty=float(options["length_penalty"]),
        stop_token_ids=() if eos is None else (eos,),
    )


@torch.inference_mode()
def generate_texts(model: Seq2SeqLM, tokenizer: Any, info: TaskInfo, sources: Sequence[str],
                   *, batch_size: int = 64, **overrides: Any) -> list[str]:
    """The model's output text for each source (greedy in batches, or beam search)."""
    was_training = model.training
    model.eval()
    config = generation_config(tokenizer, info, model, **overrides)
    ids = [f.ids for f in encode_pairs(tokenizer, [TextPair(s, None, i + 1) for i, s in
                                                   enumerate(sources)], info, labelled=False)]
    outputs: list[list[int]] = []
    if config.num_beams > 1:
        outputs = [beam_search(model, row, config)[0].token_ids for row in ids]
    else:
        for start in range(0, len(ids), batch_size):
            outputs += [r.token_ids for r in generate_batch(model, ids[start:start + batch_size],
                                                              config)]
    model.train(was_training)
    return [tokenizer.decode(out, skip_special_tokens=True).strip() for out in outputs]


class TranslateTask(TaskSpec[TextPair, PairFeature]):
    """Translation: parallel text in, an encoder-decoder trained by teacher forcing, BLEU out."""

    name = "translate"
    headline = "bleu"
    parallel = True

    def read(self, path: str | Path | tuple[str, str], labels: Sequence[str] | None = None, *,
             labelled: bool = True) -> list[TextPair]:
        """Pairs of a .tsv/.jsonl file, or of (source file, target file); empty pairs skipped."""
        data: ParallelData = (read_parallel(*path, labelled=labelled) if isinstance(path, tuple)
                              else read_parallel(path, labelled=labelled))
        if data.skipped_empty:
            log.warning("%s: skipped %d pairs with an empty side", data.where, data.skipped_empty)
        return data.pairs

    def text_of(self, example: TextPair) -> str:
        """Source and target."""
        return f"{example.source} {example.target or ''}"

    def options(self, values: dict[str, Any]) -> dict[str, Any]:
        """This task's `TaskInfo.options` from the run's settings (defaults filled in).

        Raises:
            ValueError: long_inputs is not "truncate" or "error".
        """
        options = {k: values.get(k, v) for k, v in DEFAULT_OPTIONS.items()}
        if options["long_inputs"] not in ("truncate", "error"):
            raise ValueError(f"long_inputs must be 'truncate' or 'error', "
                             f"got {options['long_inputs']!r}")
        return options

    def encode(self, tokenizer: Any, examples: list[TextPair], info: TaskInfo, *,
               labelled: bool = True) -> list[PairFeature]:
        """See `encode_pairs`."""
        return encode_pairs(tokenizer, examples, info, labelled=labelled)

    def collate(self, features: list, pad_id: int) -> TensorBatch:
        """See `collate_pairs`."""
        return collate_pairs(features, pad_id)

    def objective(self, class_weights: torch.Tensor | None = None, *,
                  info: TaskInfo | None = None) -> Objective:
        """Label-smoothed cross-entropy (options["label_smoothing"])."""
        smoothing = float((info.options if info else {}).get(
            "label_smoothing", DEFAULT_OPTIONS["label_smoothing"]))
        return lambda model, batch: seq2seq_loss(model, batch, smoothing)

    def build_model(self, info: TaskInfo, backbone: nn.Module) -> nn.Module:
        """The encoder-decoder itself (its LM head is the task head).

        Raises:
            ValueError: the backbone is not an encoder-decoder.
        """
        if not isinstance(backbone, Seq2SeqLM):
            raise ValueError(f"task {self.name!r} needs an encoder-decoder model (T5, BART, "
                             f"Marian), got arch={backbone.config.arch!r}")
        return backbone

    def evaluate(self, model: nn.Module, tokenizer: Any, info: TaskInfo,
                 examples: list[TextPair], pad_id: int) -> dict[str, Any]:
        """BLEU and chrF (sacreBLEU, detokenized, cased) of the generated targets."""
        hypotheses = generate_texts(model, tokenizer, info, [e.source for e in examples])
        scores = translation_scores(hypotheses, [e.target or "" for e in examples])
        return {**scores, "n": len(examples),
                "num_beams": int(info.options.get("num_beams", 1))}

    def example_from(self, value: Any) -> TextPair:
        """A source text (str) to translate."""
        return TextPair(source=text_input(value, self.name), target=None, line=0)

    def predict_examples(self, model: nn.Module, tokenizer: Any, info: TaskInfo,
                         examples: list[TextPair], pad_id: int, *,
                         max_new_tokens: int = 256) -> Iterator[dict[str, Any]]:
        """{"source", "translation"} per source text."""
        outputs = generate_texts(model, tokenizer, info, [p.source for p in examples],
                                 max_new_tokens=max_new_tokens)
        for pair, text in zip(examples, outputs, strict=True):
            yield {"source": pair.source, "translation": text}


SPEC = TranslateTask()
