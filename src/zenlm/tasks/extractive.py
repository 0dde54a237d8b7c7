"""Extractive summarization with an encoder: split, label, encode, score and select sentences.

An article becomes its title (context only) and its body sentences. A sentence is
labelled 1 when it occurs in the reference summary (compared lower-cased with all
whitespace removed, so summaries whose sentences are glued together, as BBC News
Summary's are, still match). The encoder reads a whole window of the article at once,
as BertSum does (Liu & Lapata 2019):

    [CLS] title [SEP] sentence 1 [SEP] sentence 2 [SEP] ...

so a sentence's tokens see the article around it and their position. This is token
classification with two classes: the features, collator, loss and head are NER's
(`zenlm.tasks.ner`); every token of a sentence (its [SEP] included) carries the
sentence's label, and a sentence's score is its tokens' mean logit margin, which, the
head being linear, is the head applied to the mean of the sentence's hidden states:
mean pooling, the way all-MiniLM-L6-v2 makes sentence embeddings. (Scoring at the
[SEP] alone, BertSum's way with [CLS], had learned next to nothing after 95 steps on
BBC: the loss stayed at the label prior's entropy.) At inference the best-scoring
sentences are taken until a length budget (a fraction of the article's words, chosen
on validation data) is spent, and are output in article order.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from zenlm.data.parallel import TextPair
from zenlm.eval.metrics import rouge_scores
from zenlm.models.heads import Backbone, TokenClassifier
from zenlm.tasks.collate import truncate_keep_last
from zenlm.tasks.ner import IGNORE, TokenFeature, collate_tokens

log = logging.getLogger(__name__)

#: Length budgets (fraction of the article's words) tried on validation data.
RATIOS = tuple(round(0.2 + 0.05 * i, 2) for i in range(13))  # 0.2 .. 0.8
DEFAULT_RATIO = 0.4  # BBC News Summary's average summary length; used until one is chosen

# Sentence-final punctuation, with the closing quotes and brackets that follow it.
_END = re.compile(r"[.!?]+[\"'”’)\]]*")
_OPENERS = "\"'‘“(["
# Words a full stop follows without ending the sentence (BBC style mostly omits them).
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "no", "vs", "v", "prof", "gen",
                  "e.g", "i.e", "etc", "inc", "ltd", "co", "corp"}


# ------------------------------------------------------------------ sentences
def split_sentences(text: str) -> list[str]:
    """The sentences of `text`, in order; a line break always ends a sentence.

    A sentence ends at . ! or ? (with any closing quotes or brackets) followed by a
    capital letter, a digit or an opening quote, after white space. Without white space
    (BBC summaries glue sentences: "...$10.9bn.For the full-year...") it ends only
    before a capital letter and not after initials, so "U.S.A" and "$1.13bn" stay whole.
    A single capital ("George W. Bush") or a known abbreviation before a full stop does
    not end one.
    """
    sentences = []
    for line in text.splitlines():
        start = 0
        for match in _END.finditer(line):
            end = _boundary(line, start, match)
            if end is not None:
                sentences.append(line[start:end].strip())
                start = end
        sentences.append(line[start:].strip())
    return [s for s in sentences if s]


def _boundary(line: str, start: int, match: re.Match[str]) -> int | None:
    """Where the sentence ends if `match` (punctuation at line[start:]) ends one, else None."""
    end = match.end()
    glued = not line[end:end + 1].isspace()
    if '"' in match.group() and glued and line.count('"', 0, match.start()) % 2 == 0:
        end = match.start() + match.group().index('"')  # no quote is open: it opens the next
    rest = line[end:]
    gap = len(rest) - len(rest.lstrip())
    following = rest[gap:].lstrip(_OPENERS)[:1]
    if not following or not (following.isupper() or (gap and following.isdigit())):
        return None
    word = line[:match.start()].rsplit(maxsplit=1)
    before = word[-1] if word else ""
    if (len(before) == 1 and before.isupper()) or before.lower() in _ABBREVIATIONS:
        return None
    initials = "." in before and len(before.rsplit(".", 1)[1]) == 1  # "U.S", "e.g"
    if not gap and (initials or not following.isupper()):
        return None  # glued: "AOL.For" and "$10.9bn.For" end a sentence, "U.S.A" does not
    return end


def normalise(text: str) -> str:
    """Lower case, all white space removed: the form in which sentences are matched."""
    return "".join(text.lower().split())


@dataclass
class Document:
    """An article split for extraction.

    Attributes:
        title: The headline (context for every window), "" when the article has none.
        sentences: The body sentences, the candidates for the summary.
        labels: 1 for each sentence found in the reference summary (None: unlabelled).
    """

    title: str
    sentences: list[str]
    labels: list[int] | None = None


def split_article(article: str) -> tuple[str, list[str]]:
    """(title, body sentences): a first line followed by a blank line is the title.

    That is BBC News Summary's layout (a headline, a blank line, paragraphs). A first
    line ending like a sentence is body text, not a title.
    """
    lines = article.strip().split("\n")
    titled = (len(lines) > 2 and not lines[1].strip()
              and not lines[0].rstrip().endswith((".", "!", "?", '"')))
    title = lines[0].strip() if titled else ""
    sentences = split_sentences("\n".join(lines[2:] if titled else lines))
    return (title, sentences) if sentences else ("", [title])


def sentence_labels(sentences: Sequence[str], summary: str) -> list[int]:
    """1 for each sentence that occurs in `summary` (normalised), else 0."""
    reference = normalise(summary)
    return [int(bool(normalise(s)) and normalise(s) in reference) for s in sentences]


def documents(examples: Sequence[TextPair], *, labelled: bool = True) -> list[Document]:
    """Split articles (`source`) and label their sentences from the summaries (`target`).

    Raises:
        ValueError: with `labelled`, no sentence of any article is in its summary
            (extractive training needs summaries made of article sentences).
    """
    docs = []
    for example in examples:
        title, sentences = split_article(example.source)
        labels = (sentence_labels(sentences, example.target or "")
                  if labelled and example.target is not None else None)
        docs.append(Document(title, sentences, labels))
    if labelled and docs:
        unmatched = [e.line for e, d in zip(examples, docs, strict=True) if not any(d.labels)]
        if len(unmatched) == len(docs):
            raise ValueError(f"no article sentence occurs in its summary (lines {unmatched[:5]}"
                             "...): extractive summarization learns from summaries made of "
                             "article sentences; use an encoder-decoder for abstractive ones")
        if unmatched:
            log.warning("%d of %d summaries share no sentence with their article (lines %s)",
                        len(unmatched), len(docs), unmatched[:10])
    return docs


# ------------------------------------------------------------------ encoding
def special_ids(tokenizer: Any) -> tuple[int, int]:
    """The encoder's (start, end) special ids, e.g. BERT's ([CLS], [SEP]).

    Raises:
        ValueError: the tokenizer does not wrap a text in exactly two special tokens.
    """
    ids = tokenizer.encode("")
    if len(ids) != 2:
        raise ValueError(f"extractive summarization needs an encoder tokenizer that wraps a "
                         f"text in a start and an end token ([CLS] ... [SEP]); it added {ids}")
    return ids[0], ids[1]


def encode_documents(tokenizer: Any, docs: Sequence[Document], max_length: int
                     ) -> list[TokenFeature]:
    """Windows of at most `max_length` tokens, each sentence closed by an end marker.

    A feature's `sentence` is its document's index, `first_word` the index of its
    first sentence and `word_starts` the position where each of its sentences starts
    (a sentence runs to the next one's start, or to the end); every token of a
    sentence carries its label, the [CLS] title [SEP] head IGNORE. A sentence longer
    than a window is cut.

    Raises:
        ValueError: `max_length` leaves no room for a sentence after the title.
    """
    start, end = special_ids(tokenizer)
    features = []
    for index, doc in enumerate(docs):
        title = tokenizer.encode(doc.title, add_special_tokens=False)[:max_length // 4]
        head = [start, *title, end] if title else [start]
        room = max_length - len(head)
        if room < 2:
            raise ValueError(f"max_length={max_length} leaves no room for a sentence")
        pieces = tokenizer.encode_batch(doc.sentences, add_special_tokens=False)
        labels = doc.labels if doc.labels is not None else [IGNORE] * len(pieces)
        first, used = 0, 0
        for k, ids in enumerate(pieces):
            size = min(len(ids), room - 1) + 1
            if used + size > room:
                features.append(_window(head, pieces, labels, index, first, k, room, end))
                first, used = k, 0
            used += size
        features.append(_window(head, pieces, labels, index, first, len(pieces), room, end))
    return features


def _window(head: list[int], pieces: list[list[int]], labels: Sequence[int], doc: int,
            first: int, stop: int, room: int, end: int) -> TokenFeature:
    """The feature of sentences first..stop-1 of one document."""
    ids, starts, targets = list(head), [], [IGNORE] * len(head)
    for k in range(first, stop):
        starts.append(len(ids))
        ids += truncate_keep_last([*pieces[k], end], room, keep_last=True)
        targets += [labels[k]] * (len(ids) - len(targets))
    return TokenFeature(ids, targets, starts, sentence=doc, first_word=first)


# ------------------------------------------------------------------- scoring
class SentenceScorer(TokenClassifier):
    """An encoder with a two-class head on every token; a sentence scores its tokens' mean.

    Args:
        backbone: The encoder.
        dropout: Dropout on the hidden states while training.
        tune_budget: Whether `evaluate` chooses the length budget on the data it scores
            (True for a model being fine-tuned, whose evaluation data is the validation
            split; a saved model keeps the budget chosen then, in task.json).
    """

    def __init__(self, backbone: Backbone, *, dropout: float = 0.1,
                 tune_budget: bool = False) -> None:
        super().__init__(backbone, 2, dropout=dropout)
        self.tune_budget = tune_budget


@torch.inference_mode()
def sentence_scores(model: torch.nn.Module, features: Sequence[TokenFeature],
                    counts: Sequence[int], pad_id: int, batch_size: int = 16
                    ) -> list[list[float]]:
    """P(in summary) of every sentence of every document (`counts[i]` sentences in doc i).

    The probability is the sigmoid of the sentence tokens' mean logit margin (class 1
    minus class 0).
    """
    model.eval()
    scores = [[0.0] * n for n in counts]
    order = sorted(features, key=lambda f: len(f.ids))  # similar lengths: little padding
    for begin in range(0, len(order), batch_size):
        chunk = order[begin:begin + batch_size]
        batch = collate_tokens(chunk, pad_id)
        logits = model(batch.ids, batch.attention_mask).float()  # (B, T, 2)
        margin = (logits[..., 1] - logits[..., 0]).tolist()  # (B, T)
        for row, feature in enumerate(chunk):
            bounds = [*feature.word_starts, len(feature.ids)]
            for k in range(len(feature.word_starts)):
                span = margin[row][bounds[k]:bounds[k + 1]]
                scores[feature.sentence][feature.first_word + k] = _sigmoid(sum(span) / len(span))
    return scores


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


# ----------------------------------------------------------------- selection
def select(sentences: Sequence[str], scores: Sequence[float], ratio: float) -> list[int]:
    """Indexes (in article order) of the best-scoring sentences within the length budget.

    Sentences are taken by descending score (ties: the earlier first) while their words
    stay within `ratio` of the article's words; the best one is always taken.
    """
    words = [len(s.split()) for s in sentences]
    budget = ratio * sum(words)
    chosen: list[int] = []
    total = 0
    for index in sorted(range(len(sentences)), key=lambda i: (-scores[i], i)):
        if chosen and total + words[index] > budget:
            break
        chosen.append(index)
        total += words[index]
    return sorted(chosen)


def summaries(docs: Sequence[Document], scores: Sequence[Sequence[float]], ratio: float
              ) -> list[str]:
    """The extracted summary of each document: its selected sentences joined by spaces."""
    return [" ".join(doc.sentences[i] for i in select(doc.sentences, s, ratio))
            for doc, s in zip(docs, scores, strict=True)]


def lead_scores(docs: Sequence[Document]) -> list[list[float]]:
    """Scores that make `select` take the leading sentences (the lead-k baseline)."""
    return [[-float(i) for i in range(len(d.sentences))] for d in docs]


def choose_ratio(docs: Sequence[Document], scores: Sequence[Sequence[float]],
                 references: Sequence[str], ratios: Sequence[float] = RATIOS
                 ) -> tuple[float, dict[float, float]]:
    """The budget with the best ROUGE-L on these documents, and ROUGE-L for each tried."""
    table = {r: rouge_scores(summaries(docs, scores, r), references)["rougeL"] for r in ratios}
    best = max(ratios, key=lambda r: (table[r], -r))  # a tie goes to the shorter summary
    return best, table
