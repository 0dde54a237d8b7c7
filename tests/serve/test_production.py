"""Production behaviour: disconnects, loading, SIGTERM drain through the real CLI."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time

import httpx2 as httpx
import pytest

from .conftest import (
    MODEL,
    cli_server,
    decoding_held,
    fail_sequences_seeded,
    metric,
    route_requests,
)


def test_fifty_clients_dropping_after_the_first_chunk_leave_nothing_running(make_server):
    server = make_server(max_batch=32, max_queue=64)
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 1500, "stream": True,
            "ignore_eos": True}

    async def drop_after_first_chunk(client):
        async with client.stream("POST", server.url + "/v1/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    return json.loads(line[6:])

    async def run():
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*[drop_after_first_chunk(client) for _ in range(50)])

    first_chunks = asyncio.run(run())
    assert all(chunk["choices"][0]["text"] is not None for chunk in first_chunks)
    deadline = time.monotonic() + 60
    while (metric(server.url, "zenlm_running_sequences")
           or metric(server.url, "zenlm_queue_depth")):
        assert time.monotonic() < deadline, "rows still busy 60 s after every client left"
        time.sleep(0.02)
    # Cancelled early: far fewer than 50 x 1500 tokens were generated.
    assert metric(server.url, "zenlm_generated_tokens_total") < 50 * 200
    assert httpx.get(server.url + "/health").status_code == 200


def test_health_is_503_while_loading_then_200(make_server, tiny_lm):
    release = threading.Event()

    def slow_loader():
        release.wait(30)
        return tiny_lm

    server = make_server(loader=slow_loader, wait_ready=False)
    health = httpx.get(server.url + "/health")
    assert health.status_code == 503 and health.json()["status"] == "loading"
    busy = httpx.post(server.url + "/v1/chat/completions",
                      json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
    assert busy.status_code == 503 and busy.json()["error"]["code"] == "model_not_ready"
    assert "retry-after" in busy.headers
    release.set()
    deadline = time.monotonic() + 10
    while httpx.get(server.url + "/health").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_health_reports_a_failed_load(make_server):
    def broken():
        raise OSError("disk on fire")

    server = make_server(loader=broken, wait_ready=False)
    deadline = time.monotonic() + 10
    while (reply := httpx.get(server.url + "/health").json())["status"] == "loading":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert reply["status"] == "failed" and "disk on fire" in reply["error"]


def test_cli_serves_then_drains_on_sigterm(tiny_chat, tmp_path):
    key = "zk-cli-secret-0123456789"
    key_file = tmp_path / "key"
    key_file.write_text(key + "\n")
    # A drain long enough for the 800 tokens on a busy machine: the test is about
    # finishing in-flight work, not about how fast (a cut stream fails it).
    proc, url = cli_server([str(tiny_chat), "--api-key-file", str(key_file),
                            "--model-name", MODEL, "--max-batch", "4", "--drain-timeout", "150"])
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        headers = {"Authorization": f"Bearer {key}"}
        body = {"model": MODEL, "prompt": "Hello", "max_tokens": 800, "stream": True,
                "ignore_eos": True, "stream_options": {"include_usage": True}}
        lines = []
        with httpx.stream("POST", url + "/v1/completions", json=body, headers=headers,
                          timeout=180) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line and not lines:
                    proc.send_signal(signal.SIGTERM)  # mid-stream
                    refused_by = time.monotonic() + 30
                    while True:  # no new connections once draining
                        try:
                            httpx.get(url + "/health", timeout=2)
                        except httpx.HTTPError:
                            break
                        assert time.monotonic() < refused_by, "still accepting after 30 s"
                        time.sleep(0.05)
                if line:
                    lines.append(line)
        assert lines[-1] == "data: [DONE]"
        usage = json.loads(lines[-2][6:])["usage"]
        assert usage["completion_tokens"] == 800  # the in-flight request finished
        assert proc.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
    finally:
        if proc.poll() is None:
            proc.kill()
    output = proc.stdout.read()
    assert "Shutting down" in output or "Finished server process" in output
    assert key not in output  # the key is never logged


def test_non_streamed_request_is_cancelled_when_its_client_leaves(make_server, tiny_lm):
    server = make_server(max_batch=4)
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 1900, "ignore_eos": True}
    url = server.url + "/v1/completions"
    generated = metric(server.url, "zenlm_generated_tokens_total")
    with decoding_held(tiny_lm):  # the request cannot finish before its client leaves
        with pytest.raises(httpx.TimeoutException):
            httpx.post(url, json=body, timeout=0.5)
        deadline = time.monotonic() + 30
        while route_requests(server.url, "/v1/completions") < 1:  # the server gave up on it
            assert time.monotonic() < deadline, "the gone client was not noticed in 30 s"
            time.sleep(0.02)
    deadline = time.monotonic() + 30
    while metric(server.url, "zenlm_running_sequences"):
        assert time.monotonic() < deadline, "the cancelled row still runs after 30 s"
        time.sleep(0.02)
    assert metric(server.url, "zenlm_generated_tokens_total") - generated < 1900  # cut short


def test_a_failing_request_gets_an_error_and_the_others_finish(make_server, monkeypatch):
    fail_sequences_seeded(monkeypatch, seed=666, at_token=3)
    server = make_server(max_batch=4)
    url = server.url + "/v1/completions"
    bad = {"model": MODEL, "prompt": "Hello", "max_tokens": 50, "seed": 666, "ignore_eos": True}
    results = {}

    def good():
        results["good"] = httpx.post(url, json={**bad, "seed": 1}, timeout=60)

    thread = threading.Thread(target=good)
    thread.start()
    failed = httpx.post(url, json=bad, timeout=60)
    with httpx.stream("POST", url, json={**bad, "stream": True}, timeout=60) as response:
        events = [line for line in response.iter_lines() if line]
    thread.join(60)
    assert failed.status_code == 500 and "boom" in failed.json()["error"]["message"]
    assert json.loads(events[-1][6:])["error"]["type"] == "server_error"
    assert results["good"].status_code == 200
    assert results["good"].json()["usage"]["completion_tokens"] == 50
    assert httpx.get(server.url + "/health").status_code == 200
