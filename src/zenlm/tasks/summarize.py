"""Summarization (`SPEC`): extractive on an encoder, abstractive on an encoder-decoder.

Data: JSON Lines with `article` and `summary` fields (or `text` and `summary`), or an
article file with an aligned summary file (`--source/--target`); empty articles are
skipped with a count, a record missing a field is an error naming its file and line
(`zenlm.data.parallel`).

The backbone decides the method:
- an encoder (BERT, MiniLM) scores article sentences and extracts the best within a
  length budget chosen on the validation split (`zenlm.tasks.extractive`);
- an encoder-decoder (T5, BART) writes the summary: the text-to-text mechanics of
  `zenlm.tasks.translate` (teacher forcing, label smoothing, generation), scored here
  with ROUGE instead of BLEU.
A decoder-only backbone is refused. Scores are ROUGE-1/2/L F-measure (0-100) by Google's
`rouge-score` with Porter stemming; ROUGE-L selects the best model.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from zenlm.data.parallel import TextPair
from zenlm.eval.metrics import rouge_scores
from zenlm.models import Seq2SeqLM
from zenlm.tasks import extractive
from zenlm.tasks.batching import TensorBatch
from zenlm.tasks.ner import TokenFeature, collate_tokens, token_loss
from zenlm.tasks.spec import Objective, TaskInfo, text_input
from zenlm.tasks.translate import TranslateTask, generate_texts

EXTRACTIVE, ABSTRACTIVE = "encoder", "encoder-decoder"  # TaskInfo.arch of each method


def method(info: TaskInfo) -> str:
    """"extractive" for an encoder backbone, "abstractive" for an encoder-decoder.

    Raises:
        ValueError: any other backbone (named, with the valid ones).
    """
    if info.arch == EXTRACTIVE:
        return "extractive"
    if info.arch == ABSTRACTIVE:
        return "abstractive"
    raise ValueError(f"task 'summarize' needs an encoder (extractive, e.g. all-minilm-l6-v2) "
                     f"or an encoder-decoder (abstractive, e.g. T5, BART); the model has "
                     f"arch={info.arch!r}")


class SummarizeTask(TranslateTask):
    """Article -> summary; ROUGE-L first. Abstractive parts are translate's."""

    name = "summarize"
    headline = "rougeL"

    def group_of(self, index: int, example: TextPair) -> Hashable:
        """The normalised article: duplicated articles stay on one side of a split."""
        return extractive.normalise(example.source)

    def options(self, values: dict[str, Any]) -> dict[str, Any]:
        """Translate's options, with room for a news summary's length when generating."""
        return {**super().options(values), "max_new_tokens": 256}

    def encode(self, tokenizer: Any, examples: list[TextPair], info: TaskInfo, *,
               labelled: bool = True) -> list:
        """Sentence windows (extractive) or source/target pairs (abstractive)."""
        if method(info) == "abstractive":
            return super().encode(tokenizer, examples, info, labelled=labelled)
        docs = extractive.documents(examples, labelled=labelled)
        return extractive.encode_documents(tokenizer, docs, info.max_length)

    def collate(self, features: list, pad_id: int) -> TensorBatch:
        """NER's token batches for sentence windows, translate's for pairs."""
        if features and isinstance(features[0], TokenFeature):
            return collate_tokens(features, pad_id)
        return super().collate(features, pad_id)

    def objective(self, class_weights: torch.Tensor | None = None, *,
                  info: TaskInfo | None = None) -> Objective:
        """Cross-entropy of in/out of summary at each sentence marker, or seq2seq's loss."""
        if info is not None and method(info) == "extractive":
            return functools.partial(token_loss, class_weights=class_weights)
        return super().objective(class_weights, info=info)

    def build_model(self, info: TaskInfo, backbone: nn.Module) -> nn.Module:
        """A sentence scorer on an encoder; the encoder-decoder itself otherwise."""
        if method(info) == "abstractive" or isinstance(backbone, Seq2SeqLM):
            return super().build_model(info, backbone)
        # A model without a chosen budget is being fine-tuned: it picks one on validation.
        return extractive.SentenceScorer(backbone, dropout=info.dropout,
                                         tune_budget="ratio" not in info.options)

    def evaluate(self, model: nn.Module, tokenizer: Any, info: TaskInfo,
                 examples: list[TextPair], pad_id: int) -> dict[str, Any]:
        """ROUGE-1/2/L F-measure of the summaries against the references (and "n").

        Extractive models being fine-tuned also choose their length budget here (the
        fraction of an article's words, on these validation examples) and record it in
        `info.options["ratio"]`, which task.json keeps.
        """
        references = [e.target or "" for e in examples]
        extra: dict[str, Any] = {"method": method(info)}
        if extra["method"] == "abstractive":
            hypotheses = generate_texts(model, tokenizer, info, [e.source for e in examples],
                                        max_new_tokens=int(info.options.get("max_new_tokens",
                                                                            256)))
            extra["num_beams"] = int(info.options.get("num_beams", 1))
        else:
            docs, scores = self._score(model, tokenizer, info, examples, pad_id)
            if getattr(model, "tune_budget", False):
                info.options["ratio"], table = extractive.choose_ratio(docs, scores, references)
                extra["ratios"] = {str(r): v for r, v in table.items()}
            extra["ratio"] = float(info.options.get("ratio", extractive.DEFAULT_RATIO))
            hypotheses = extractive.summaries(docs, scores, extra["ratio"])
        return {**rouge_scores(hypotheses, references), "n": len(examples), **extra}

    def example_from(self, value: Any) -> TextPair:
        """An article (str) to summarize."""
        return TextPair(source=text_input(value, self.name, "an article (str)"), target=None,
                        line=0)

    def predict_examples(self, model: nn.Module, tokenizer: Any, info: TaskInfo,
                         examples: list[TextPair], pad_id: int, *,
                         max_new_tokens: int = 256) -> Iterator[dict[str, Any]]:
        """{"article", "summary"} per article."""
        if method(info) == "abstractive":
            outputs = generate_texts(model, tokenizer, info, [e.source for e in examples],
                                     max_new_tokens=max_new_tokens)
        else:
            docs, scores = self._score(model, tokenizer, info, examples, pad_id)
            outputs = extractive.summaries(
                docs, scores, float(info.options.get("ratio", extractive.DEFAULT_RATIO)))
        for example, summary in zip(examples, outputs, strict=True):
            yield {"article": example.source, "summary": summary}

    @staticmethod
    def _score(model: nn.Module, tokenizer: Any, info: TaskInfo, examples: Sequence[TextPair],
               pad_id: int) -> tuple[list[extractive.Document], list[list[float]]]:
        """The split documents and the model's score for each of their sentences."""
        docs = extractive.documents(examples, labelled=False)
        features = extractive.encode_documents(tokenizer, docs, info.max_length)
        counts = [len(d.sentences) for d in docs]
        return docs, extractive.sentence_scores(model, features, counts, pad_id)


SPEC = SummarizeTask()
