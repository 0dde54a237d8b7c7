"""Serving an encoder-decoder: /v1/completions with the source text as the prompt.

The oracle is the Python API (`zenlm.load(...).complete` / `.stream`), which drives the same
core without the engine's continuous batching: a request's tokens must not depend on
what else runs beside it.
"""

from __future__ import annotations

import concurrent.futures
import json

import httpx2 as httpx
import pytest

import zenlm

from ..generate.tiny_seq2seq import tiny_marian_folder

pytest.importorskip("transformers")

MODEL = "tiny-seq2seq"
SOURCES = ["Hello, world!", "The cat sat on the mat.", "ok",
           "A longer source sentence, to pad the others in the encoder batch."]


@pytest.fixture(scope="module")
def seq2seq_lm(tmp_path_factory) -> zenlm.LM:
    """A random 2+2-layer Marian with a byte-level BPE (</s> ends), from its folder."""
    folder = tmp_path_factory.mktemp("tiny_marian")
    tiny_marian_folder(folder, seed=5)
    return zenlm.load(folder, quantize=None)


@pytest.fixture(scope="module")
def server(seq2seq_lm):
    from zenlm.serve import ServeOptions, create_app

    from .conftest import LiveServer

    app = create_app(lambda: seq2seq_lm, ServeOptions(
        model_name=MODEL, max_batch=8, sampling_defaults="openai"))
    live = LiveServer(app).start()
    yield live
    live.stop()


def complete(server, **body) -> dict:
    response = httpx.post(server.url + "/v1/completions", json={"model": MODEL, **body},
                          timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("options", [dict(temperature=0.0), dict(temperature=0.9, seed=11),
                                     dict(temperature=0.7, seed=3, n=2)])
def test_completion_equals_the_python_api(server, seq2seq_lm, options):
    body = complete(server, prompt=SOURCES, max_tokens=16, **options)
    api = dict(options)
    n = api.pop("n", 1)
    expected = seq2seq_lm.complete(SOURCES, max_new_tokens=16, num_return_sequences=n, **api)
    texts = [c["text"] for c in sorted(body["choices"], key=lambda c: c["index"])]
    assert texts == [c.text for c in expected]
    assert body["usage"]["prompt_tokens"] == sum(
        len(seq2seq_lm.encode_prompt(s)) for s in SOURCES)
    assert body["usage"]["completion_tokens"] == sum(len(c.result.token_ids) for c in expected)


def test_concurrent_requests_keep_their_own_sources(server, seq2seq_lm):
    """12 requests on 8 rows join and leave a running batch; each keeps its own source."""
    jobs = [(source, seed, 6 + 3 * i) for i, (source, seed) in
            enumerate([(s, seed) for seed in (1, 2, 3) for s in SOURCES])]
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        bodies = list(pool.map(lambda job: complete(
            server, prompt=job[0], seed=job[1], max_tokens=job[2], temperature=1.0), jobs))
    for (source, seed, tokens), body in zip(jobs, bodies, strict=True):
        expected = seq2seq_lm.generate(source, max_new_tokens=tokens, temperature=1.0,
                                       seed=seed)
        assert body["choices"][0]["text"] == expected


def test_stream_equals_the_python_stream(server, seq2seq_lm):
    body = {"model": MODEL, "prompt": SOURCES[1], "max_tokens": 12, "temperature": 0.8,
            "seed": 5, "stream": True}
    pieces = []
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                pieces += [c["text"] for c in json.loads(line[6:])["choices"]]
    expected = list(seq2seq_lm.stream(SOURCES[1], max_new_tokens=12, temperature=0.8, seed=5))
    assert "".join(pieces) == "".join(expected)
    assert "".join(expected) == seq2seq_lm.generate(SOURCES[1], max_new_tokens=12,
                                                    temperature=0.8, seed=5)


def test_chat_route_translates_the_last_user_message(server, seq2seq_lm):
    """The playground's route: the source is what the user said last."""
    response = httpx.post(server.url + "/v1/chat/completions", timeout=60, json={
        "model": MODEL, "max_tokens": 10, "temperature": 0, "messages": [
            {"role": "system", "content": "Translate."}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "salut"},
            {"role": "user", "content": SOURCES[1]}]})
    assert response.status_code == 200, response.text
    reply = response.json()["choices"][0]["message"]["content"]
    assert reply == seq2seq_lm.generate(SOURCES[1], max_new_tokens=10)
    response = httpx.post(server.url + "/v1/chat/completions", timeout=60, json={
        "model": MODEL, "messages": [{"role": "system", "content": "Translate."}]})
    assert response.status_code == 400 and "last user message" in response.text


def test_long_sources_are_named(server):
    response = httpx.post(server.url + "/v1/completions", timeout=60, json={
        "model": MODEL, "prompt": list(range(3, 203)), "max_tokens": 4})
    assert response.status_code == 400
    assert "the source has 200 tokens; the encoder reads at most 128" in response.text


@pytest.mark.parametrize("max_tokens", [0, 4])
def test_echo_is_refused_by_name(server, max_tokens):
    """An encoder-decoder does not predict its source: there are no prompt logprobs."""
    response = httpx.post(server.url + "/v1/completions", timeout=60, json={
        "model": MODEL, "prompt": SOURCES[0], "echo": True, "logprobs": 1,
        "max_tokens": max_tokens})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "echo" and "encoder-decoder" in error["message"]
