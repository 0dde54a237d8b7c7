"""Servers for the serving tests: a tiny random chat model, in-process or through the CLI."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import uvicorn

import zenlm
from zenlm.serve import ServeOptions, create_app

transformers = pytest.importorskip("transformers")

from ..models.tiny_hf import randomize  # noqa: E402
from ..test_tokenizer import CHATML, SAMPLES  # noqa: E402
from ..tiny_tokenizer import byte_level_bpe  # noqa: E402

MODEL = "tiny-chat"


@pytest.fixture(scope="session")
def tiny_chat(tmp_path_factory) -> Path:
    """A 2-layer random Llama with a byte-level BPE and a ChatML template, as an HF folder."""
    backend = byte_level_bpe(SAMPLES * 20)
    folder = tmp_path_factory.mktemp("tiny_chat")
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="<|im_end|>", chat_template=CHATML
    )
    fast.save_pretrained(folder)
    config = transformers.LlamaConfig(
        vocab_size=backend.get_vocab_size(), hidden_size=64, intermediate_size=112,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=2048, bos_token_id=0, eos_token_id=3, tie_word_embeddings=False,
    )
    model = transformers.AutoModelForCausalLM.from_config(config)
    randomize(model, seed=0).save_pretrained(folder)
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """uvicorn on a thread, bound to 127.0.0.1 on a free port."""

    def __init__(self, app) -> None:
        self.app = app
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def start(self, wait_ready: bool = True) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                status = httpx.get(self.url + "/health", timeout=2).status_code
                if status == 200 or (status == 503 and not wait_ready):
                    return self
            time.sleep(0.05)
        raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()

    @property
    def engine(self):
        return self.app.state.server.engine


@pytest.fixture(scope="session")
def tiny_lm(tiny_chat):
    return zenlm.load(tiny_chat, quantize=None)


@pytest.fixture
def make_server(tiny_lm) -> Iterator[Callable[..., LiveServer]]:
    """Start servers of the tiny model with given options; stopped after the test."""
    started: list[LiveServer] = []

    def make(loader=None, wait_ready: bool = True, **options) -> LiveServer:
        options.setdefault("model_name", MODEL)
        app = create_app(loader or (lambda: tiny_lm), ServeOptions(**options))
        server = LiveServer(app).start(wait_ready)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def tiny_server(tiny_chat) -> Iterator[LiveServer]:
    """One shared server of the tiny model (max_batch 8)."""
    lm = zenlm.load(tiny_chat, quantize=None)
    app = create_app(lambda: lm, ServeOptions(model_name=MODEL, max_batch=8, max_queue=64))
    server = LiveServer(app).start()
    yield server
    server.stop()


def fail_sequences_seeded(monkeypatch: pytest.MonkeyPatch, seed: int, at_token: int) -> None:
    """Make the engine raise "boom" while recording token `at_token` of any request with
    sampling seed `seed` (one failing request among healthy ones)."""
    from zenlm.generate.core import Sequence

    accept = Sequence.accept

    def flaky(self, token, *args):  # noqa: ANN001, ANN002, ANN202
        if self.config.seed == seed and len(self.tokens) == at_token:
            raise RuntimeError("boom")
        return accept(self, token, *args)

    monkeypatch.setattr(Sequence, "accept", flaky)


@contextlib.contextmanager
def decoding_held(lm: zenlm.LM, free_calls: int = 2) -> Iterator[threading.Event]:
    """After `free_calls` forward passes, `lm`'s model waits for the yielded event.

    A request then stays in its row for as long as a test needs (an event, not a
    guess at how long decoding takes); leaving the block releases the model.
    """
    block = lm.model.blocks[0]
    own = block.__dict__.get("forward")  # an instance-level forward to put back, if any
    forward, calls, go = block.forward, [], threading.Event()

    def gated(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) > free_calls:
            go.wait(120)
        return forward(*args, **kwargs)

    block.forward = gated
    try:
        yield go
    finally:
        go.set()
        if own is None:
            del block.forward  # back to the class's forward
        else:
            block.forward = own


def route_requests(url: str, route: str) -> float:
    """Requests answered on `route` so far, whatever their status."""
    text = httpx.get(url + "/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("zenlm_requests_total{") and f'route="{route}"' in line)


def metric(url: str, name: str) -> float:
    """A metric's value from /metrics (sum over its label sets)."""
    text = httpx.get(url + "/metrics", timeout=5).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith(name) and not line.startswith("#")
              and (line[len(name)] in " {")]
    return sum(values)


def cli_server(args: list[str], env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """`zenlm serve ...` as a subprocess on a free port; returns it and its URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "zenlm.cli", "serve", *args, "--port", str(port),
           "--host", "127.0.0.1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    return proc, f"http://127.0.0.1:{port}"
