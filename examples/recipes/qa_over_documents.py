"""Question answering over a folder of your own documents: retrieve, then answer with sources.

1. chunk every .txt/.md file of the folder into passages of about `--chunk-words` words;
2. embed the passages and the question with all-MiniLM-L6-v2 (`lm.embed`: mean-pooled,
   unit-length vectors) and retrieve the `--top` passages by cosine similarity;
3. answer with SmolLM2-135M-Instruct from the retrieved passages only, citing them as
   [1], [2], ... (the prompt numbers them), and print the sources.

`--evaluate` instead measures retrieval on a set built from SQuAD: each paragraph of
the first `--articles` articles becomes a document, each of their questions a query, and
a hit is a retrieved passage from the paragraph the question was written on.

    python examples/recipes/qa_over_documents.py --docs my_notes/ --question "..."
    python examples/recipes/qa_over_documents.py --evaluate --articles 5

Prints the answer and its sources, or hit@1 / hit@k and mean reciprocal rank.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

import zenlm

DATA = Path(os.environ.get("ZENLM_DATA", Path(__file__).resolve().parents[2].parent / "shared"
                           / "data"))


@dataclass
class Passage:
    """A chunk of a document: its text and where it came from."""

    text: str
    source: str


def chunk(text: str, source: str, words: int) -> list[Passage]:
    """Passages of whole sentences, about `words` words each."""
    sentences = re.split(r"(?<=[.!?。！？])\s+", " ".join(text.split()))
    passages, current = [], []
    for sentence in sentences:
        current.append(sentence)
        if sum(len(s.split()) for s in current) >= words:
            passages.append(Passage(" ".join(current), source))
            current = []
    if current:
        passages.append(Passage(" ".join(current), source))
    return passages


def read_folder(folder: Path, words: int) -> list[Passage]:
    """Every .txt and .md file under `folder`, chunked."""
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".txt", ".md"))
    if not files:
        raise SystemExit(f"{folder}: no .txt or .md files")
    return [p for f in files for p in chunk(f.read_text(encoding="utf-8"), str(f), words)]


class Retriever:
    """Cosine-similarity search over passage embeddings (one matrix product)."""

    def __init__(self, embedder: zenlm.LM, passages: list[Passage]) -> None:
        self.embedder, self.passages = embedder, passages
        self.vectors = embedder.embed([p.text for p in passages])  # (N, d), unit length

    def search(self, questions: list[str], top: int) -> list[list[int]]:
        """The indices of the `top` passages nearest each question, best first."""
        scores = self.embedder.embed(questions) @ self.vectors.T  # (Q, N) cosines
        return scores.topk(min(top, len(self.passages)), dim=-1).indices.tolist()


def answer(generator: zenlm.LM, question: str, passages: list[Passage]) -> str:
    """SmolLM2's answer from the numbered passages, asked to cite them."""
    context = "\n".join(f"[{i}] {p.text}" for i, p in enumerate(passages, 1))
    prompt = (f"Answer the question using only these passages, and cite them like [1].\n\n"
              f"{context}\n\nQuestion: {question}")
    return generator.chat([{"role": "user", "content": prompt}], max_new_tokens=80,
                          temperature=0)


def squad_set(path: Path, articles: int) -> tuple[list[Passage], list[tuple[str, str]]]:
    """Paragraphs as documents (source = paragraph id) and (question, its paragraph id)."""
    data = json.loads(path.read_text(encoding="utf-8"))["data"][:articles]
    passages, questions = [], []
    for a, article in enumerate(data):
        for p, paragraph in enumerate(article["paragraphs"]):
            source = f"{a}-{p}"
            passages += chunk(paragraph["context"], source, 10_000)  # one passage each
            questions += [(qa["question"], source) for qa in paragraph["qas"]]
    return passages, questions


def evaluate(retriever: Retriever, questions: list[tuple[str, str]], top: int) -> dict:
    """hit@1, hit@top and mean reciprocal rank (within the top) of the gold passage."""
    found = retriever.search([q for q, _ in questions], top)
    ranks = []
    for (_, gold), indices in zip(questions, found, strict=True):
        sources = [retriever.passages[i].source for i in indices]
        ranks.append(sources.index(gold) + 1 if gold in sources else None)
    n = len(ranks)
    return {"questions": n, "passages": len(retriever.passages),
            "hit@1": sum(r == 1 for r in ranks) / n, f"hit@{top}": sum(r is not None
                                                                        for r in ranks) / n,
            "mrr": sum(1 / r for r in ranks if r) / n}


@torch.inference_mode()
def main(argv: list[str] | None = None) -> None:
    """Answer a question over a folder, or measure retrieval on SQuAD."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", default=None, help="folder of .txt / .md files")
    parser.add_argument("--question", default=None)
    parser.add_argument("--top", type=int, default=3, help="passages retrieved")
    parser.add_argument("--chunk-words", type=int, default=120)
    parser.add_argument("--evaluate", action="store_true", help="retrieval hit rate on SQuAD")
    parser.add_argument("--articles", type=int, default=5)
    parser.add_argument("--squad", default=str(DATA / "squad" / "train-sample.json"))
    args = parser.parse_args(argv)

    embedder = zenlm.load("all-minilm-l6-v2")
    if args.evaluate:
        passages, questions = squad_set(Path(args.squad), args.articles)
        print(json.dumps(evaluate(Retriever(embedder, passages), questions, args.top)))
        return
    if not (args.docs and args.question):
        raise SystemExit("give --docs FOLDER --question TEXT, or --evaluate")
    retriever = Retriever(embedder, read_folder(Path(args.docs), args.chunk_words))
    chosen = [retriever.passages[i] for i in retriever.search([args.question], args.top)[0]]
    print(answer(zenlm.load("smollm2-135m-instruct"), args.question, chosen))
    for number, passage in enumerate(chosen, 1):
        print(f"[{number}] {passage.source}: {passage.text[:100]}")


if __name__ == "__main__":
    main()
