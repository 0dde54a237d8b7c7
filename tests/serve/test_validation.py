"""Bad requests: every one a 4xx in OpenAI's shape naming the parameter; never a 5xx."""

from __future__ import annotations

import json

import httpx2 as httpx
import pytest

from .conftest import MODEL

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MESSAGES = [{"role": "user", "content": "Hello"}]


def chat(**fields) -> dict:
    return {"model": MODEL, "messages": MESSAGES, **fields}


CASES = [  # (id, route, JSON body or raw bytes, expected status, expected param)
    ("temperature -1", CHAT, chat(temperature=-1), 400, "temperature"),
    ("temperature NaN literal", CHAT,
     b'{"model": "tiny-chat", "messages": [{"role": "user", "content": "x"}], '
     b'"temperature": NaN}', 400, "temperature"),
    ("temperature NaN string", CHAT, chat(temperature="NaN"), 400, "temperature"),
    ("temperature inf", CHAT,
     b'{"model": "tiny-chat", "messages": [{"role": "user", "content": "x"}], '
     b'"temperature": Infinity}', 400, "temperature"),
    ("top_p 0", CHAT, chat(top_p=0), 400, "top_p"),
    ("top_p 1.1", CHAT, chat(top_p=1.1), 400, "top_p"),
    ("n 0", CHAT, chat(n=0), 400, "n"),
    ("n 1e6", CHAT, chat(n=10**6), 400, "n"),
    ("n beyond the batch", CHAT, chat(n=100), 400, "n"),
    ("max_tokens 0", CHAT, chat(max_tokens=0), 400, "max_tokens"),
    ("max_tokens -1", CHAT, chat(max_tokens=-1), 400, "max_tokens"),
    ("prompt + max_tokens beyond the context", CHAT, chat(max_tokens=2040), 400, "max_tokens"),
    ("prompt beyond the context", COMPLETIONS,
     {"model": MODEL, "prompt": [5] * 3000, "max_tokens": 1}, 400, "prompt"),
    ("token id outside the vocabulary", COMPLETIONS,
     {"model": MODEL, "prompt": [5, 10**9]}, 400, "prompt"),
    ("invalid JSON", CHAT, b'{"model": "tiny-chat", "messages": [', 400, None),
    ("empty body", CHAT, b"", 400, None),
    ("array body", CHAT, b"[1, 2]", 400, None),
    ("string body", CHAT, b'"hello"', 400, None),
    ("temperature as a string", CHAT, chat(temperature="hot"), 400, "temperature"),
    ("n as a float", CHAT, chat(n=1.5), 400, "n"),
    ("max_tokens as a bool", CHAT, chat(max_tokens=True), 400, "max_tokens"),
    ("stream as a string", CHAT, chat(stream="yes"), 400, "stream"),
    ("stop as a number", CHAT, chat(stop=5), 400, "stop"),
    ("five stop strings", CHAT, chat(stop=list("abcde")), 400, "stop"),
    ("messages as a string", CHAT, {"model": MODEL, "messages": "hi"}, 400, "messages"),
    ("no messages", CHAT, {"model": MODEL, "messages": []}, 400, "messages"),
    ("missing model", CHAT, {"messages": MESSAGES}, 400, "model"),
    ("bad role", CHAT, chat(messages=[{"role": "wizard", "content": "x"}]), 400,
     "messages[0].role"),
    ("content as a number", CHAT, chat(messages=[{"role": "user", "content": 3}]), 400,
     "messages[0].content"),
    ("top_logprobs without logprobs", CHAT, chat(top_logprobs=2), 400, "top_logprobs"),
    ("top_logprobs 21", CHAT, chat(logprobs=True, top_logprobs=21), 400, "top_logprobs"),
    ("presence_penalty 3", CHAT, chat(presence_penalty=3), 400, "presence_penalty"),
    ("seed beyond 64 bits", CHAT, chat(seed=2**70), 400, "seed"),
    ("completions logprobs 6", COMPLETIONS, {"model": MODEL, "prompt": "x", "logprobs": 6}, 400,
     "logprobs"),
    ("max_tokens 0 without echo", COMPLETIONS, {"model": MODEL, "prompt": "x", "max_tokens": 0},
     400, "max_tokens"),
    ("completions max_tokens -1 with echo", COMPLETIONS,
     {"model": MODEL, "prompt": "x", "max_tokens": -1, "echo": True}, 400, "max_tokens"),
    ("echo logprobs 6", COMPLETIONS,
     {"model": MODEL, "prompt": "x", "max_tokens": 0, "echo": True, "logprobs": 6}, 400,
     "logprobs"),
    ("echo logprobs -1", COMPLETIONS,
     {"model": MODEL, "prompt": "x", "max_tokens": 0, "echo": True, "logprobs": -1}, 400,
     "logprobs"),
    ("echo as a string", COMPLETIONS, {"model": MODEL, "prompt": "x", "echo": "yes"}, 400,
     "echo"),
    ("echo: prompt + max_tokens beyond the context", COMPLETIONS,
     {"model": MODEL, "prompt": [5] * 2040, "max_tokens": 10, "echo": True, "logprobs": 1},
     400, "max_tokens"),
    ("unknown model", CHAT, chat(model="gpt-9"), 404, "model"),
    ("10 MB body", CHAT, b'{"model": "' + b"x" * (10 * 2**20) + b'"}', 413, None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_request_is_a_4xx_in_openai_shape(tiny_server, case):
    _, route, body, status, param = case
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(tiny_server.url + route, content=content, timeout=30,
                          headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert error["message"] and isinstance(error["type"], str)
    if param is not None:
        assert param.split("[")[0] in error["message"]


def test_health_stays_ok_and_nothing_was_a_5xx(tiny_server):
    assert httpx.get(tiny_server.url + "/health").status_code == 200
    text = httpx.get(tiny_server.url + "/metrics").text
    # /health answers 503 while the model loads (the fixture polls it): that is its job
    fives = [line for line in text.splitlines() if 'status="5' in line
             and 'route="/health",status="503"' not in line]
    assert not fives


def test_unknown_route_and_method_are_openai_errors(tiny_server):
    missing = httpx.get(tiny_server.url + "/v1/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = httpx.get(tiny_server.url + CHAT)
    assert wrong.status_code == 405 and "error" in wrong.json()


def test_chunked_body_over_the_limit_is_413(tiny_server):
    def chunks():
        for _ in range(20):
            yield b"x" * 2**19

    response = httpx.post(tiny_server.url + CHAT, content=chunks(), timeout=30)
    assert response.status_code == 413
