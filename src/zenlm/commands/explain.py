"""`zenlm explain`: a page that shows what a model does with a text, and its token vectors.

With `--text`: attention maps (per layer and head, head-averaged, rolled out), token
surprisal for causal LMs, and integrated-gradients attributions for classifiers and
token classifiers, written as a self-contained HTML page plus PNGs into `--out`.
With `--neighbours WORD` or `--analogy a:b::c`: nearest tokens in the input embeddings.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def explain_command(model: str, text: str | None = None, target: str | None = None,
                    out: str = "explanation", max_tokens: int = 64, method: str = "ig",
                    steps: int = 50, layer: int | None = None, neighbours: str | None = None,
                    analogy: str | None = None, top: int = 10, as_json: bool = False) -> int:
    """Explain `text` (page in `out`) and/or list a word's neighbours or an analogy."""
    from zenlm.explain.subject import load_subject

    if text is None and neighbours is None and analogy is None:
        raise ValueError("give --text, --neighbours WORD or --analogy a:b::c")
    if top < 1:
        raise ValueError(f"--top must be at least 1, got {top}")
    if target is not None and text is None:
        raise ValueError(f"--target {target!r} applies to --text; give the text to explain")
    subject = load_subject(model)
    result: dict[str, Any] = {}
    if neighbours is not None or analogy is not None:
        result["embeddings"] = _embeddings(subject, neighbours, analogy, top, as_json)
    if text is not None:
        from zenlm.explain.run import explain_text

        page, numbers = explain_text(subject, text, target=target, max_tokens=max_tokens,
                                     method=method, n_steps=steps, layer=layer)
        written = page.write(out)
        for path in written:
            print(f"wrote {path}", file=sys.stderr)
        result["text"] = numbers | {"page": str(written[0])}
        if not as_json:
            print("\n".join(f"{key}: {_show(value)}" for key, value in result["text"].items()))
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
    return 0


def _embeddings(subject: Any, neighbours: str | None, analogy: str | None, top: int,
                quiet: bool) -> dict[str, Any]:
    """Neighbours and/or analogy results; printed unless `quiet` (for --json)."""
    from zenlm.explain import embeddings
    from zenlm.explain.tokens import input_embedding, token_string

    weights = input_embedding(subject.model).weight.detach()
    tokenizer = subject.tokenizer
    found: dict[str, Any] = {"note": embeddings.NOTE}
    lines: list[str] = []
    if neighbours is not None:
        word, near = embeddings.neighbours(neighbours, tokenizer, weights, top)
        found["neighbours"] = _rows(near, tokenizer, token_string)
        found["word"] = {"text": word.text, "pieces": word.pieces}
        lines += [f"nearest tokens to {word.text!r} (tokens {word.pieces}"
                  f"{', mean of the pieces' if len(word.ids) > 1 else ''}), cosine similarity:"]
        lines += [f"  {r['token']!r:24} {r['cosine']:.4f}" for r in found["neighbours"]]
    if analogy is not None:
        words, near = embeddings.analogy(analogy, tokenizer, weights, top)
        found["analogy"] = _rows(near, tokenizer, token_string)
        a, b, c = (w.text for w in words)
        lines += [f"{a!r} is to {b!r} as {c!r} is to (nearest to b - a + c, inputs left out; "
                  f"tokens {[w.pieces for w in words]}):"]
        lines += [f"  {r['token']!r:24} {r['cosine']:.4f}" for r in found["analogy"]]
    if not quiet:
        print("\n".join(lines) + f"\nnote: {embeddings.NOTE}")
    return found


def _rows(near: list[tuple[int, float]], tokenizer: Any, name: Any) -> list[dict[str, Any]]:
    return [{"id": i, "token": name(tokenizer, i), "cosine": round(s, 6)} for i, s in near]


def _show(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def register(commands: argparse._SubParsersAction) -> None:
    """Add `explain`."""
    ex = commands.add_parser(
        "explain", help="attention maps, surprisal and attributions of a text as an HTML "
        "page; nearest tokens and analogies in the input embeddings")
    ex.add_argument("model", help="model folder, .gguf file or short name, or a `zenlm "
                    "finetune --task classify|ner` output folder")
    ex.add_argument("--text", default=None, help="the text to explain")
    ex.add_argument("--target", default=None, metavar="LABEL",
                    help="classify/ner: the label to attribute (default: the predicted one)")
    ex.add_argument("--out", default="explanation", metavar="DIR",
                    help="folder for index.html and the PNGs (default: explanation)")
    ex.add_argument("--max-tokens", type=int, default=64, metavar="N",
                    help="attention maps past N tokens are pooled into N bins; a token "
                    "classifier explains its first N tokens (default 64)")
    ex.add_argument("--method", choices=("ig", "gxi"), default="ig",
                    help="attributions: integrated gradients (default) or gradient x input")
    ex.add_argument("--steps", type=int, default=50,
                    help="integration points of integrated gradients (default 50)")
    ex.add_argument("--layer", type=int, default=None, metavar="L",
                    help="the layer whose heads the page draws one by one, labelled "
                    "(default: the last; every layer is in the thumbnail grid)")
    ex.add_argument("--neighbours", default=None, metavar="WORD",
                    help="list the tokens nearest to WORD in the input embeddings")
    ex.add_argument("--analogy", default=None, metavar="A:B::C",
                    help="the tokens nearest to B - A + C (e.g. man:king::woman)")
    ex.add_argument("--top", type=int, default=10, metavar="K",
                    help="how many tokens --neighbours and --analogy list (default 10)")
    ex.add_argument("--json", action="store_true", dest="as_json",
                    help="print the results as one JSON object")
    ex.set_defaults(handler=explain_command)
