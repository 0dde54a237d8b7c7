"""`zenlm serve`: the OpenAI-compatible HTTP server with its web playground."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from zenlm.generate.defaults import SAMPLING_DEFAULTS_MODES
from zenlm.quant import QUANTIZE_MODES

KEY_ENV = "ZENLM_API_KEY"


def serve_command(
    model: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    api_key_file: str | None = None,
    model_name: str | None = None,
    max_batch: int = 16,
    max_queue: int = 64,
    kv_budget_mb: float = 1024.0,
    max_body_mb: float = 1.0,
    quantize: str | None = "auto",
    dtype: str | None = None,
    drain_timeout: float = 30.0,
    threads: int | None = None,
    log_level: str = "info",
    compile: bool = False,
    sampling_defaults: str = "model",
) -> int:
    """Serve `model` until SIGINT/SIGTERM; on a signal, finish in-flight requests, then exit."""
    import uvicorn

    import zenlm
    from zenlm.cpu import cpu_info
    from zenlm.quant.auto import chosen_mode
    from zenlm.serve import ServeOptions, create_app

    if threads is not None:
        import torch

        # On a machine shared with other jobs, fewer threads than cores avoids OpenMP
        # threads spinning against each other (measured: 100x slower steps at 2 of 2).
        torch.set_num_threads(threads)
    key = _api_key(api_key, api_key_file)
    name = model_name or _default_name(model)
    options = ServeOptions(
        model_name=name, api_key=key, max_batch=max_batch, max_queue=max_queue,
        kv_budget_mb=kv_budget_mb, max_body_bytes=int(max_body_mb * 2**20),
        sampling_defaults=sampling_defaults,
    )
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if dtype is None:
        quantize = chosen_mode(quantize)
    info = cpu_info()
    print(f"zenlm serve: CPU level {info.level} ({' '.join(info.features)}); "
          f"mode {quantize or 'as loaded'}", flush=True)
    app = create_app(lambda: zenlm.load(model, dtype=dtype, quantize=quantize, compile=compile),
                     options)
    auth = "an API key" if key else "no API key"
    print(f"zenlm serve: {name} on http://{host}:{port}/ with {auth} "
          f"(the model loads in the background; GET /health says when it is ready)", flush=True)
    # uvicorn handles SIGTERM: it stops accepting connections, lets in-flight requests
    # finish (up to drain_timeout), then runs the app's shutdown, which stops the engine.
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=drain_timeout)
    uvicorn.Server(config).run()
    return 0


def _api_key(api_key: str | None, api_key_file: str | None) -> str | None:
    """The key from --api-key, --api-key-file or $ZENLM_API_KEY (ValueError if empty)."""
    if api_key is not None and api_key_file is not None:
        raise ValueError("give --api-key or --api-key-file, not both")
    if api_key_file is not None:
        api_key = Path(api_key_file).read_text().strip()
    elif api_key is None:
        api_key = os.environ.get(KEY_ENV)
    if api_key is not None and not api_key.strip():
        raise ValueError("the API key is empty")
    return api_key.strip() if api_key is not None else None


def _default_name(model: str) -> str:
    """The id clients pass as `model`: a short name as given, else the file/folder name."""
    path = Path(model)
    return path.stem if path.suffix.lower() == ".gguf" else path.name or model


def register(commands: argparse._SubParsersAction) -> None:
    """Add `serve`."""
    serve = commands.add_parser(
        "serve", help="OpenAI-compatible HTTP server with continuous batching and a playground"
    )
    serve.add_argument("model", help="model folder, .gguf file, short name or hub id")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    keys = serve.add_mutually_exclusive_group()
    keys.add_argument("--api-key", default=None,
                      help=f"require this key (visible in `ps`: prefer --api-key-file "
                      f"or ${KEY_ENV})")
    keys.add_argument("--api-key-file", default=None, help="read the key from this file")
    serve.add_argument("--model-name", default=None, help="the id clients pass as `model`")
    serve.add_argument("--max-batch", type=int, default=16,
                       help="sequences decoded together (KV cache rows)")
    serve.add_argument("--max-queue", type=int, default=64,
                       help="requests allowed to wait; past it: 429 with Retry-After")
    serve.add_argument("--kv-budget-mb", type=float, default=1024.0,
                       help="memory for the KV cache (sets tokens per row)")
    serve.add_argument("--max-body-mb", type=float, default=1.0, help="request body size limit")
    serve.add_argument("--quantize", choices=QUANTIZE_MODES, default="auto",
                       help="auto: the fastest mode on this CPU (see `zenlm info`)")
    serve.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                       help="load the weights in this dtype, as they are")
    serve.add_argument("--drain-timeout", type=float, default=30.0,
                       help="seconds in-flight requests get to finish after SIGTERM")
    serve.add_argument("--threads", type=int, default=None,
                       help="PyTorch threads (default: PyTorch's choice, one per core)")
    serve.add_argument("--compile", action="store_true",
                       help="torch.compile the decode step (a one-off compilation at start)")
    serve.add_argument("--sampling-defaults", choices=SAMPLING_DEFAULTS_MODES, default="model",
                       help="for sampling parameters a request leaves out: the model's "
                       "generation_config.json, else top-k 40, top-p 0.95, min-p 0.05 at "
                       "temperature 0.2; or openai (temperature 1)")
    serve.add_argument("--log-level", default="info",
                       choices=["critical", "error", "warning", "info", "debug"],
                       help="uvicorn's and zenlm's log level")
    serve.set_defaults(handler=serve_command)
