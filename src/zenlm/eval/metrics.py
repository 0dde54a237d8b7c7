"""Task metrics: accuracy, P/R/F1, confusion matrix, entity F1, SQuAD EM/F1, BLEU, ROUGE.

Pure Python over lists, so they are easy to check against slow references:
scikit-learn for P/R/F1, seqeval for entity F1, the official SQuAD v1.1 script's
normalisation for EM/F1.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

from zenlm.eval.report import Figure, save_figure


def accuracy(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> float:
    """Fraction of predictions equal to the truth."""
    _same_length(y_true, y_pred)
    return sum(t == p for t, p in zip(y_true, y_pred, strict=True)) / max(len(y_true), 1)


def _same_length(y_true: Sequence[Any], y_pred: Sequence[Any]) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}


def precision_recall_f1(
    y_true: Sequence[Hashable], y_pred: Sequence[Hashable], labels: Sequence[Hashable] | None = None
) -> dict[str, Any]:
    """Per-class, macro, micro and weighted precision, recall and F1 (0/0 counts as 0).

    Returns:
        {"per_class": {label: {precision, recall, f1, support}}, "macro": {...},
        "micro": {...}, "weighted": {...}}. Macro averages the classes in `labels`
        (default: every label seen in either list); micro pools their counts; weighted
        averages the classes by their support (scikit-learn's `average="weighted"`).
    """
    _same_length(y_true, y_pred)
    labels = list(labels) if labels is not None else sorted(set(y_true) | set(y_pred), key=str)
    counts = {label: [0, 0, 0] for label in labels}  # tp, fp, fn
    for truth, guess in zip(y_true, y_pred, strict=True):
        if truth == guess and truth in counts:
            counts[truth][0] += 1
            continue
        if guess in counts:
            counts[guess][1] += 1
        if truth in counts:
            counts[truth][2] += 1
    per_class = {label: _prf(*c) for label, c in counts.items()}
    macro = {k: sum(m[k] for m in per_class.values()) / max(len(labels), 1)
             for k in ("precision", "recall", "f1")}
    macro["support"] = sum(m["support"] for m in per_class.values())
    micro = _prf(*(sum(c[i] for c in counts.values()) for i in range(3)))
    support = macro["support"]
    weighted = {k: sum(m[k] * m["support"] for m in per_class.values()) / support
                if support else 0.0 for k in ("precision", "recall", "f1")}
    weighted["support"] = support
    return {"per_class": per_class, "macro": macro, "micro": micro, "weighted": weighted}


def confusion_matrix(
    y_true: Sequence[Hashable], y_pred: Sequence[Hashable], labels: Sequence[Hashable]
) -> list[list[int]]:
    """Counts [i][j] of examples with true label labels[i] predicted as labels[j]."""
    _same_length(y_true, y_pred)
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for truth, guess in zip(y_true, y_pred, strict=True):
        if truth not in index or guess not in index:
            raise ValueError(f"label {truth if truth not in index else guess!r} not in {labels}")
        matrix[index[truth]][index[guess]] += 1
    return matrix


def draw_confusion_matrix(
    matrix: Sequence[Sequence[int]], labels: Sequence[Hashable]
) -> Callable[[Any], None]:
    """A `Figure.draw` for the matrix as a heat map with the count in every cell."""
    def draw(ax: Any) -> None:
        ax.imshow(matrix, cmap="Blues")
        names = [str(label) for label in labels]
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        peak = max((max(row) for row in matrix), default=0)
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                ax.text(j, i, str(count), ha="center", va="center",
                        color="white" if count > peak / 2 else "black")

    return draw


def confusion_figure(
    matrix: Sequence[Sequence[int]], labels: Sequence[Hashable],
    name: str = "confusion_matrix", title: str = "Confusion matrix",
) -> Figure:
    """The confusion matrix as a report `Figure`, square and sized for its labels."""
    size = max(3.0, 0.6 * len(labels) + 2)
    return Figure(name, title, draw_confusion_matrix(matrix, labels), size=(size, size))


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], labels: Sequence[Hashable], path: str | Path,
    title: str = "Confusion matrix",
) -> Path:
    """Save the matrix as an annotated heat map (PNG/SVG/PDF by suffix) and return its path."""
    return save_figure(confusion_figure(matrix, labels, title=title), Path(path))


# ----------------------------------------------------------------- entities
def get_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first, last) chunks of an IOB2 tag sequence, with seqeval's default rules.

    As seqeval (and conlleval), a chunk also starts at an I- tag that does not continue
    a chunk of its type, so predictions with broken BIO still count their entities.
    """
    chunks = []
    kind, start = None, None
    for index, tag in enumerate([*tags, "O"]):
        prefix, _, tag_type = tag.partition("-") if tag != "O" else ("O", "", "")
        ends = kind is not None and (prefix in ("O", "B") or tag_type != kind)
        if ends:
            chunks.append((kind, start, index - 1))
            kind = None
        if prefix in ("B", "I") and kind is None:
            kind, start = tag_type, index
    return chunks


def entity_f1(
    true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]
) -> dict[str, Any]:
    """Entity-level micro precision/recall/F1 and per type (an entity counts only if exact).

    Args:
        true_tags: Gold IOB2 tags of each sentence.
        pred_tags: Predicted tags, one per gold tag.
    """
    _same_length(true_tags, pred_tags)
    gold, pred = set(), set()
    for index, (t, p) in enumerate(zip(true_tags, pred_tags, strict=True)):
        if len(t) != len(p):
            raise ValueError(f"sentence {index}: {len(t)} gold tags but {len(p)} predicted")
        gold.update((index, *e) for e in get_entities(t))
        pred.update((index, *e) for e in get_entities(p))
    types = sorted({e[1] for e in gold | pred})
    per_type = {}
    for kind in types:
        g = {e for e in gold if e[1] == kind}
        q = {e for e in pred if e[1] == kind}
        per_type[kind] = _prf(len(g & q), len(q - g), len(g - q))
    overall = _prf(len(gold & pred), len(pred - gold), len(gold - pred))
    return {**overall, "per_type": per_type}


# -------------------------------------------------------------------- SQuAD
def normalize_answer(text: str) -> str:
    """The official SQuAD v1.1 normalisation: lower case, no punctuation/articles/extra spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_exact_match(prediction: str, truth: str) -> float:
    """1.0 if the normalised strings are equal."""
    return float(normalize_answer(prediction) == normalize_answer(truth))


def squad_f1(prediction: str, truth: str) -> float:
    """Token-overlap F1 of the normalised strings (bag of words)."""
    pred_tokens = normalize_answer(prediction).split()
    true_tokens = normalize_answer(truth).split()
    common = collections.Counter(pred_tokens) & collections.Counter(true_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(true_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(
    predictions: dict[str, str], references: dict[str, Sequence[str]]
) -> dict[str, float]:
    """Official SQuAD v1.1 EM and F1 in percent: best over each question's gold answers.

    A question without a prediction scores 0 (as the official script does).
    """
    scores = squad_per_question(predictions, references)
    n = len(references)
    return {"exact_match": 100.0 * sum(em for em, _ in scores.values()) / n,
            "f1": 100.0 * sum(f1 for _, f1 in scores.values()) / n}


def squad_per_question(
    predictions: dict[str, str], references: dict[str, Sequence[str]]
) -> dict[str, tuple[float, float]]:
    """(exact match, F1), each 0-1, of every question: the best over its gold answers.

    A question without a prediction scores (0, 0).
    """
    if not references:
        raise ValueError("no reference answers")
    scores = {}
    for qid, answers in references.items():
        if qid not in predictions:
            scores[qid] = (0.0, 0.0)
            continue
        scores[qid] = (max(squad_exact_match(predictions[qid], a) for a in answers),
                       max(squad_f1(predictions[qid], a) for a in answers))
    return scores


def translation_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Corpus BLEU and chrF of detokenized, cased text, as sacreBLEU reports them.

    BLEU uses sacreBLEU's default 13a tokenization and exponential smoothing; chrF
    character 6-grams with beta 2. Both are on a 0-100 scale. `bleu_lowercase` is the
    same BLEU on lower-cased text, closer to the tokenized, lower-cased BLEU of many
    papers (which also tokenize German compounds and punctuation their own way).

    Args:
        hypotheses: One system output per segment.
        references: The one reference of each segment.
    """
    from sacrebleu.metrics import BLEU, CHRF

    _same_length(references, hypotheses)
    bleu, chrf, lower = BLEU(), CHRF(), BLEU(lowercase=True)
    hyps, refs = list(hypotheses), [list(references)]
    return {"bleu": float(bleu.corpus_score(hyps, refs).score),
            "chrf": float(chrf.corpus_score(hyps, refs).score),
            "bleu_lowercase": float(lower.corpus_score(hyps, refs).score),
            "bleu_signature": str(bleu.get_signature())}


#: The ROUGE variants `rouge_scores` reports (rouge-score's names).
ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


def rouge_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure (0-100) of summaries, as Google's `rouge-score` computes it.

    Porter stemming is on (`use_stemmer=True`, as papers report ROUGE); the tokenizer
    lower-cases and keeps only letters and digits. ROUGE-L is the longest common
    subsequence over the whole text ("rougeL", not the newline-split "rougeLsum"), so
    sentence order matters.

    Args:
        hypotheses: One system summary per document.
        references: The one reference summary of each document.
    """
    from rouge_score import rouge_scorer

    _same_length(references, hypotheses)
    if not references:
        raise ValueError("no summaries to score")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_KEYS, 0.0)
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        for key, score in scorer.score(reference, hypothesis).items():
            totals[key] += score.fmeasure
    return {key: 100.0 * total / len(references) for key, total in totals.items()}
