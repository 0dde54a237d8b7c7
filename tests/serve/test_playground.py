"""The playground in Debian's Chromium, driven by Playwright: type, send, see a streamed answer."""

from __future__ import annotations

import time

import pytest

from ..browser import chromium


@pytest.fixture
def browser(tmp_path):
    with chromium(tmp_path / "profile", height=700) as context:
        yield context


def test_playground_streams_an_answer(browser, make_server, tmp_path, monkeypatch):
    from zenlm.serve.engine import Engine

    step = Engine._step

    def paced_step(self):  # the tiny model is too quick to watch: ~20 ms per token
        step(self)
        time.sleep(0.02)

    monkeypatch.setattr(Engine, "_step", paced_step)
    server = make_server(max_batch=4)
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(server.url + "/")
    page.wait_for_function("document.getElementById('model').textContent === 'tiny-chat'")
    page.fill("#temperature", "0")
    page.fill("#max_tokens", "48")
    # Record every length the answer takes while it streams in.
    page.evaluate("""() => {
        window.seen = [];
        new MutationObserver(() => {
            const out = document.querySelector('.msg.assistant .content');
            if (out) window.seen.push(out.textContent.length);
        }).observe(document.getElementById('messages'),
                   {childList: true, subtree: true, characterData: true});
    }""")
    page.fill("#prompt", "Hello, world!")
    page.keyboard.press("Enter")
    page.wait_for_selector(".msg.assistant.done", timeout=60_000)
    lengths = page.evaluate("window.seen")
    answer = page.text_content(".msg.assistant .content")
    assert answer and "Error" not in answer
    assert len(set(lengths)) > 2, "the answer should arrive in several pieces"
    assert "tokens in" in page.text_content("#stats")
    shot = tmp_path / "zenlm-playground.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"playground screenshot: {shot}")
    assert shot.stat().st_size > 1000
    assert all(u.startswith(server.url) for u in requests)  # nothing leaves 127.0.0.1
