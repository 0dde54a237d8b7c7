"""`zenlm explain` end to end: the page it writes, what it prints, and its errors."""

from __future__ import annotations

import json
import re

import pytest

from tests.explain.conftest import CONTEXT, LABELS, TAGS
from zenlm.cli import main

EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def _self_contained(page: str) -> None:
    assert not EXTERNAL.search(page), "the page must not load anything from the network"
    sources = re.findall(r'<img[^>]*src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in page.lower() and "<link" not in page.lower()


def test_classifier_page_with_attributions(tiny_classifier_folder, tmp_path, capsys):
    out = tmp_path / "page"
    assert main(["explain", str(tiny_classifier_folder), "--text", "this movie was great!",
                 "--target", "positive", "--out", str(out), "--steps", "32", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)["text"]
    assert printed["explained_label"] == "positive" and printed["predicted"] in LABELS
    assert printed["completeness_relative_error"] < 1e-2
    page = (out / "index.html").read_text(encoding="utf-8")
    _self_contained(page)
    for name in ("attributions", "attention_rollout", "attention_layer", "attention_layer_heads",
                 "attention_heads"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Completeness" in page and "convergence delta" in page


def test_tagger_page_explains_each_token(tiny_tagger_folder, tmp_path, capsys):
    out = tmp_path / "page"
    assert main(["explain", str(tiny_tagger_folder), "--text", "Ada Lovelace wrote programs",
                 "--out", str(out), "--steps", "16", "--max-tokens", "3"]) == 0
    printed = capsys.readouterr().out
    assert "completeness_relative_error" in printed
    page = (out / "index.html").read_text(encoding="utf-8")
    _self_contained(page)
    assert "Attributions are computed for the first 3 of" in page  # a note, not an error
    assert "pooled into 3 bins" in page
    assert any(tag in page for tag in TAGS)


def test_unknown_target_names_the_labels(tiny_classifier_folder, tmp_path, capsys):
    assert main(["explain", str(tiny_classifier_folder), "--text", "fine", "--target",
                 "happy", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "'happy'" in error and "negative, neutral, positive" in error


def test_text_longer_than_the_context_is_refused(tiny_classifier_folder, tmp_path, capsys):
    text = " ".join(["word"] * (CONTEXT + 5))
    assert main(["explain", str(tiny_classifier_folder), "--text", text, "--out",
                 str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert f"{CONTEXT + 7} tokens" in error and f"at most {CONTEXT}" in error


def test_neighbours_and_analogy_print_with_the_note(minilm_folder, capsys):
    assert main(["explain", str(minilm_folder), "--neighbours", "king", "--analogy",
                 "man:king::woman", "--top", "3"]) == 0
    printed = capsys.readouterr().out
    assert "nearest tokens to 'king'" in printed and "'queen'" in printed
    assert "not contextual" in printed and "mean of its pieces" in printed


@pytest.mark.parametrize(("args", "message"), [
    (["--analogy", "man:king:woman"], "a:b::c"),
    (["--analogy", "man:🦄::woman"], "'🦄' is not in the vocabulary"),
    (["--neighbours", "🦄"], "'🦄' is not in the vocabulary"),
    (["--target", "positive", "--neighbours", "king"], "--target 'positive' applies to --text"),
    (["--text", "hello", "--target", "positive"], "needs a classifier"),
    (["--text", "hello", "--layer", "6"], "--layer 6 is not a layer of"),
    ([], "give --text, --neighbours WORD or --analogy a:b::c"),
])
def test_bad_input_gets_one_clear_error(minilm_folder, tmp_path, capsys, args, message):
    assert main(["explain", str(minilm_folder), "--out", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err
