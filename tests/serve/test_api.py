"""The official openai client against the server: sync, async, streaming, errors."""

from __future__ import annotations

import asyncio
import json

import httpx2 as httpx
import pytest

from .conftest import MODEL, decoding_held, metric

openai = pytest.importorskip("openai")

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello, world!"}]


def client(server, key: str = "none"):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=60)


def test_models_and_health(tiny_server):
    models = client(tiny_server).models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert httpx.get(tiny_server.url + "/health").json()["status"] == "ok"


def test_sync_chat_equals_the_python_api(tiny_server, tiny_lm):
    reply = client(tiny_server).chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=12, temperature=0)
    expected = tiny_lm.complete([tiny_lm.encode_chat(MESSAGES)], max_new_tokens=12)[0]
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == expected.text
    assert choice.finish_reason == expected.result.finish_reason
    assert reply.usage.prompt_tokens == len(tiny_lm.encode_chat(MESSAGES))
    assert reply.usage.completion_tokens == len(expected.result.token_ids)
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")


def test_sync_stream_matches_non_streamed(tiny_server):
    c = client(tiny_server)
    options = dict(model=MODEL, messages=MESSAGES, max_tokens=16, temperature=0.8, seed=3,
                   extra_body={"ignore_eos": True})
    whole = c.chat.completions.create(**options)
    chunks = list(c.chat.completions.create(**options, stream=True,
                                            stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16


def test_raw_sse_is_openai_shaped(tiny_server):
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 5, "stream": True,
            "ignore_eos": True}
    with httpx.stream("POST", tiny_server.url + "/v1/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = raw.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-2])
    assert {p["object"] for p in payloads} == {"text_completion"}
    assert payloads[-1]["choices"][0]["finish_reason"] == "length"
    assert "usage" not in payloads[0]  # only with stream_options.include_usage


def test_async_client_concurrent_streams_and_completions(tiny_server, tiny_lm):
    async def run():
        c = openai.AsyncOpenAI(base_url=tiny_server.url + "/v1", api_key="x", max_retries=0)

        async def streamed(i):
            stream = await c.completions.create(model=MODEL, prompt=f"Hello {i}", max_tokens=8,
                                                temperature=0, stream=True)
            return "".join([ch.choices[0].text async for ch in stream if ch.choices])

        async def whole(i):
            reply = await c.completions.create(model=MODEL, prompt=f"Hello {i}", max_tokens=8,
                                               temperature=0)
            return reply.choices[0].text

        results = await asyncio.gather(*[streamed(i) for i in range(6)],
                                       *[whole(i) for i in range(6)])
        await c.close()
        return results

    results = asyncio.run(run())
    expected = [tiny_lm.generate(f"Hello {i}", max_new_tokens=8) for i in range(6)]
    assert results == expected + expected


def test_completions_n_logprobs_and_several_prompts(tiny_server):
    reply = client(tiny_server).completions.create(
        model=MODEL, prompt=["naïve café", "Hello"], n=2, max_tokens=6, temperature=1.0, seed=5,
        logprobs=3, extra_body={"ignore_eos": True})
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    for choice in reply.choices:
        lp = choice.logprobs
        assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
        assert all(v <= 0 for v in lp.token_logprobs)
        assert all(len(top) <= 3 for top in lp.top_logprobs)
    assert reply.usage.completion_tokens == 24


def test_chat_logprobs(tiny_server):
    reply = client(tiny_server).chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=4, temperature=0, logprobs=True,
        top_logprobs=2, extra_body={"ignore_eos": True})
    content = reply.choices[0].logprobs.content
    assert len(content) == 4
    for entry in content:  # greedy: the chosen token is the most likely one
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)


def test_stop_string_ends_the_text_before_it(tiny_server):
    c = client(tiny_server)
    options = dict(model=MODEL, prompt="Hello, world!", max_tokens=40, temperature=0,
                   extra_body={"ignore_eos": True})
    full = c.completions.create(**options).choices[0].text
    stop = full[10:12]
    cut = c.completions.create(**options, stop=[stop]).choices[0]
    assert cut.text == full[: full.index(stop)]
    assert cut.finish_reason == "stop"
    streamed = "".join(ch.choices[0].text for ch in
                       c.completions.create(**options, stop=stop, stream=True) if ch.choices)
    assert streamed == cut.text


def test_errors_surface_as_openai_exceptions(tiny_server):
    c = client(tiny_server)
    with pytest.raises(openai.BadRequestError) as caught:
        c.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=-1)
    assert caught.value.body["param"] == "temperature"
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="gpt-9", messages=MESSAGES)


def test_rate_limit_error_with_retry_after(make_server, tiny_lm):
    server = make_server(max_batch=1, max_queue=0)
    c = client(server)
    with decoding_held(tiny_lm):  # the only row stays busy until the block ends
        stream = c.completions.create(model=MODEL, prompt="Hello", max_tokens=1900, stream=True,
                                      extra_body={"ignore_eos": True})
        next(iter(stream))
        with pytest.raises(openai.RateLimitError) as caught:
            c.completions.create(model=MODEL, prompt="Hello", max_tokens=4)
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert caught.value.body["code"] == "rate_limit_exceeded"
    stream.close()


def test_metrics_count_requests_tokens_and_latency(tiny_server):
    before = metric(tiny_server.url, "zenlm_generated_tokens_total")
    client(tiny_server).completions.create(model=MODEL, prompt="Hello", max_tokens=5,
                                           extra_body={"ignore_eos": True})
    text = httpx.get(tiny_server.url + "/metrics").text
    assert metric(tiny_server.url, "zenlm_generated_tokens_total") == before + 5
    assert 'zenlm_requests_total{route="/v1/completions",status="200"}' in text
    for name in ("zenlm_queue_depth", "zenlm_running_sequences", "zenlm_prompt_tokens_total",
                 "zenlm_time_to_first_token_seconds_bucket",
                 "zenlm_inter_token_latency_seconds_bucket"):
        assert name in text


def test_embeddings(tiny_server, tiny_lm):
    reply = client(tiny_server).embeddings.create(model=MODEL, input=["Hello", "world"])
    assert len(reply.data) == 2
    expected = tiny_lm.embed(["Hello", "world"])
    assert reply.data[1].embedding == pytest.approx(expected[1].tolist(), abs=1e-5)


def test_streamed_chat_with_n_choices(tiny_server):
    chunks = list(client(tiny_server).chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=5, n=3, temperature=1.0, seed=11,
        stream=True, extra_body={"ignore_eos": True}))
    roles = [ch.choices[0].index for ch in chunks if ch.choices[0].delta.role == "assistant"]
    finishes = {ch.choices[0].index: ch.choices[0].finish_reason for ch in chunks
                if ch.choices[0].finish_reason}
    assert roles == [0, 1, 2] and finishes == {0: "length", 1: "length", 2: "length"}
