"""One generation core behind every entry point: the CLI, the Python API and the server
give the same tokens and log-probabilities for the same seeded request; the server uses
the compiled decode step; sampling defaults fill what a request leaves out."""

from __future__ import annotations

import json

import httpx2 as httpx
import pytest
import torch

import zenlm
from zenlm.cli import main as cli_main
from zenlm.generate.defaults import DEFAULT_CHAIN

from .conftest import MODEL, LiveServer

PROMPT = "Hello, world! The"
PENALISED = dict(temperature=0.9, top_k=30, top_p=0.95, min_p=0.02, repetition_penalty=1.3,
                 presence_penalty=0.5, frequency_penalty=0.3, seed=1234)
# Without penalties the old engine drew rows together with a sampler of its own: the
# same seed then gave other tokens than `zenlm generate`.
PLAIN = dict(temperature=0.9, top_k=30, top_p=0.95, min_p=0.02, repetition_penalty=1.0,
             presence_penalty=0.0, frequency_penalty=0.0, seed=99)


def _cli(capsys, folder, *args: str) -> dict:
    argv = ["generate", str(folder), "--prompt", PROMPT, "--json", *args]
    capsys.readouterr()
    assert cli_main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _cli_args(sampling: dict, max_tokens: int, stop: list[str]) -> list[str]:
    args = ["--max-new-tokens", str(max_tokens), "--logprobs", "3"]
    for key, value in sampling.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    for s in stop:
        args += ["--stop", s]
    return args


def _server(server: LiveServer, sampling: dict, max_tokens: int, stop: list[str]) -> dict:
    body = dict(model=MODEL, prompt=PROMPT, max_tokens=max_tokens, logprobs=3, stop=stop,
                **sampling)
    reply = httpx.post(server.url + "/v1/completions", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]


@pytest.mark.parametrize("sampling", [PENALISED, PLAIN], ids=["penalties", "no-penalties"])
def test_same_seeded_request_same_tokens_through_cli_api_and_server(
    tiny_chat, make_server, capsys, sampling
):
    lm = zenlm.load(tiny_chat)
    free = lm.complete([PROMPT], max_new_tokens=40, **sampling)[0]
    # A stop string the sampled text really contains (past its first tokens), so that
    # all three must end at the same place for the same reason.
    cut = len(lm.tokenizer.decode(free.result.token_ids[:6]))
    stop = [free.text[cut: cut + 2]]
    assert stop[0].strip() and free.text.index(stop[0]) >= 1

    cli = _cli(capsys, tiny_chat, *_cli_args(sampling, 40, stop))
    api = lm.complete([PROMPT], max_new_tokens=40, stop=stop, logprobs=True, top_logprobs=3,
                      **sampling)[0]
    # Each entry point loads the model its own way, with its defaults (quantize "auto").
    served = _server(make_server(loader=lambda: zenlm.load(tiny_chat), max_batch=4),
                     sampling, 40, stop)

    assert cli["finish_reason"] == api.result.finish_reason == served["finish_reason"] == "stop"
    assert cli["token_ids"] == api.result.token_ids
    assert cli["text"] == api.text == lm.generate(PROMPT, max_new_tokens=40, stop=stop,
                                                  **sampling) == served["text"]
    assert not api.text.endswith(stop[0]) and stop[0] not in api.text
    pieces = [lm.tokenizer.decode([t], skip_special_tokens=False) for t in api.result.token_ids]
    assert served["logprobs"]["tokens"] == pieces
    assert cli["logprobs"] == api.result.logprobs == served["logprobs"]["token_logprobs"]
    # {text: logprob}; tokens that decode alike (pieces of one character) keep the likeliest
    top = []
    for step in api.result.top_logprobs:  # most likely first
        texts: dict[str, float] = {}
        for t, lp in step:
            texts.setdefault(lm.tokenizer.decode([t], skip_special_tokens=False), lp)
        top.append(texts)
    assert served["logprobs"]["top_logprobs"] == top
    assert [[list(pair) for pair in step] for step in api.result.top_logprobs] == \
        cli["top_logprobs"]


def test_serving_with_compile_runs_the_compiled_step(tiny_chat, monkeypatch, capsys):
    """`zenlm serve --compile`: every decode step of a request goes through the callable
    torch.compile returned (a counting stand-in, so nothing is really compiled)."""
    import uvicorn

    calls = {"compiled": 0}

    def fake_compile(fn, **_):
        def compiled(*args, **kwargs):
            calls["compiled"] += 1
            return fn(*args, **kwargs)
        return compiled

    apps = []
    monkeypatch.setattr(torch, "compile", fake_compile)
    with monkeypatch.context() as patch:  # catch the app `zenlm serve` would run
        patch.setattr(uvicorn.Server, "run", lambda self: apps.append(self.config.app))
        assert cli_main(["serve", str(tiny_chat), "--compile", "--model-name", MODEL]) == 0
    server = LiveServer(apps[0]).start()
    try:
        body = dict(model=MODEL, prompt=PROMPT, max_tokens=7, ignore_eos=True)
        reply = httpx.post(server.url + "/v1/completions", json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] == 7
    finally:
        server.stop()
    assert calls["compiled"] == 6  # the first token comes from the prefill, 6 from steps


def test_omitted_sampling_parameters_take_the_servers_defaults(make_server, monkeypatch):
    from zenlm.serve.engine import Engine

    seen = []
    submit = Engine.submit
    monkeypatch.setattr(Engine, "submit", lambda self, job: (seen.append(job.config),
                                                              submit(self, job))[1])
    body = dict(model=MODEL, prompt=PROMPT, max_tokens=2)
    model_server = make_server(max_batch=2)
    openai_server = make_server(max_batch=2, sampling_defaults="openai")
    for server, extra in [(model_server, {}), (openai_server, {}),
                          (model_server, {"temperature": 0.3, "top_k": 0})]:
        reply = httpx.post(server.url + "/v1/completions", json={**body, **extra}, timeout=60)
        assert reply.status_code == 200, reply.text
    chain, openai, given = [(c.temperature, c.top_k, c.top_p, c.min_p) for c in seen]
    assert chain == tuple(DEFAULT_CHAIN[k] for k in ("temperature", "top_k", "top_p", "min_p"))
    assert openai == (1.0, 0, 1.0, 0.0)
    assert given == (0.3, 0, 0.95, 0.05)  # what the request gives wins, the rest defaults


def test_beam_search_is_refused_by_the_server_by_name(make_server):
    server = make_server(max_batch=2)
    body = dict(model=MODEL, prompt=PROMPT, max_tokens=4, num_beams=3)
    reply = httpx.post(server.url + "/v1/completions", json=body, timeout=60)
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "num_beams"


@pytest.mark.parametrize("mode", ["model", "openai"])
def test_cli_sampling_defaults(tiny_chat, capsys, monkeypatch, mode):
    from zenlm.api import LM

    seen = []
    complete = LM.complete
    monkeypatch.setattr(LM, "complete", lambda self, prompts, **o: (seen.append(o),
                                                                      complete(self, prompts, **o))[1])
    _cli(capsys, tiny_chat, "--max-new-tokens", "2", "--sampling-defaults", mode)
    _cli(capsys, tiny_chat, "--max-new-tokens", "2", "--temperature", "0")
    expected = DEFAULT_CHAIN if mode == "model" else {"temperature": 1.0, "top_k": 0,
                                                       "top_p": 1.0, "min_p": 0.0}
    assert {k: seen[0][k] for k in expected} == expected
    assert seen[1]["temperature"] == 0


def test_lm_generate_and_complete_use_beam_search(tiny_lm):
    """`num_beams` reaches beam search from `generate` and `complete` (it used to decode
    greedily from some entry points); `stream` refuses it by name."""
    from zenlm.generate import GenerationConfig
    from zenlm.generate.beam import beam_search

    ids = tiny_lm.encode_prompt(PROMPT)
    config = GenerationConfig(max_new_tokens=8, num_beams=3, num_return_sequences=2,
                              stop_token_ids=tiny_lm.stop_token_ids())
    beams = [r.token_ids for r in beam_search(tiny_lm.model, ids, config)]
    completions = tiny_lm.complete([PROMPT], max_new_tokens=8, num_beams=3,
                                   num_return_sequences=2)
    assert [c.result.token_ids for c in completions] == beams
    text = tiny_lm.generate(PROMPT, max_new_tokens=8, num_beams=3)
    assert text == tiny_lm.decode_new(beam_search(tiny_lm.model, ids, GenerationConfig(
        max_new_tokens=8, num_beams=3, stop_token_ids=tiny_lm.stop_token_ids()))[0])
    with pytest.raises(ValueError, match="num_beams"):
        next(tiny_lm.stream(PROMPT, num_beams=2))
    with pytest.raises(ValueError, match="stop strings"):
        tiny_lm.generate(PROMPT, num_beams=2, stop=["x"])
