"""The explanation pages in Debian's headless Chromium (Playwright): no errors, a real screenshot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from zenlm.explain.run import explain_text
from zenlm.explain.subject import load_subject

from ..browser import chromium


@pytest.fixture
def browser(tmp_path):
    with chromium(tmp_path / "profile", height=800) as context:
        yield context


def _open_and_shoot(browser, folder: Path, shot: Path) -> dict:
    """Open index.html; the page's errors, requests, image sizes; a full-page screenshot."""
    page = browser.new_page()
    errors: list[str] = []
    requests: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: requests.append(r.url))
    page.goto((folder / "index.html").as_uri())
    page.wait_for_load_state("load")
    widths = page.evaluate("[...document.images].map(i => i.complete ? i.naturalWidth : 0)")
    page.screenshot(path=str(shot), full_page=True)
    return {"errors": errors, "requests": requests, "widths": widths}


def _check_screenshot(shot: Path, min_height: int) -> None:
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))  # (H, W, 3|4) floats
    assert pixels.shape[1] == 1100 and pixels.shape[0] >= min_height
    colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 200, "the screenshot should show plots, not a blank page"


def _check_page(result: dict) -> None:
    assert result["errors"] == []
    assert all(u.startswith(("file:", "data:")) for u in result["requests"])
    assert result["widths"] and all(w > 0 for w in result["widths"])  # every image decoded


def test_smollm2_page_in_chromium(browser, smollm2_subject, tmp_path):
    page, numbers = explain_text(smollm2_subject, "The cat sat on the mat.", max_tokens=64)
    folder = tmp_path / "smollm2"
    page.write(folder)
    assert numbers["surprisal_scored_tokens"] == numbers["tokens"] - 1
    result = _open_and_shoot(browser, folder, tmp_path / "smollm2.png")
    _check_page(result)
    assert len(result["widths"]) == 5  # surprisal, rollout, a layer, its heads, every head
    _check_screenshot(tmp_path / "smollm2.png", min_height=2000)


def test_classifier_page_in_chromium(browser, tiny_classifier_folder, tmp_path):
    page, numbers = explain_text(load_subject(tiny_classifier_folder), "a fine, moving film",
                                 n_steps=32)
    folder = tmp_path / "classifier"
    page.write(folder)
    assert numbers["completeness_relative_error"] < 1e-2
    result = _open_and_shoot(browser, folder, tmp_path / "classifier.png")
    _check_page(result)
    assert len(result["widths"]) == 5  # attributions, rollout, a layer, its heads, every head
    _check_screenshot(tmp_path / "classifier.png", min_height=1000)
