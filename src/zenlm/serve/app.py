"""The HTTP layer: OpenAI-compatible routes, validation, auth, limits, metrics, playground.

`create_app(loader, options)` returns a FastAPI app. The model loads on a background
thread when the app starts, so `/health` answers 503 until it is ready. Every error
is in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from zenlm.errors import InvalidParameter
from zenlm.generate import GenerationConfig
from zenlm.generate.defaults import SAMPLING_KEYS, fill_sampling
from zenlm.models import DecoderLM, Seq2SeqLM
from zenlm.serve import sse
from zenlm.serve.engine import (
    Delta,
    Done,
    Engine,
    Event,
    Failed,
    PromptScores,
    QueueFullError,
)
from zenlm.serve.engine import Request as EngineRequest
from zenlm.serve.errors import APIError, error_body
from zenlm.serve.gate import Gate
from zenlm.serve.metrics import Metrics
from zenlm.serve.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    _Sampling,
)

log = logging.getLogger("zenlm.serve")
STATIC = resources.files("zenlm.serve") / "static"
# GenerationConfig's names -> the API's, so a 400 names what the client sent.
API_NAMES = {"max_new_tokens": "max_tokens", "num_return_sequences": "n"}


@dataclass
class ServeOptions:
    """How the server runs (see `zenlm serve --help`)."""

    model_name: str
    api_key: str | None = None
    max_batch: int = 16
    max_queue: int = 64
    kv_budget_mb: float = 1024.0
    max_body_bytes: int = 1 << 20
    sampling_defaults: str = "model"  # for parameters a request leaves out: "model"|"openai"


class ServerState:
    """The model and engine once loaded; what /health reports until then."""

    def __init__(self, loader: Callable[[], Any], options: ServeOptions) -> None:
        self.loader, self.options = loader, options
        self.metrics = Metrics()
        self.lm: Any = None
        self.engine: Engine | None = None
        self.sampling: dict[str, Any] = {}  # defaults of the sampling parameters
        self.error: str | None = None
        self.ready = threading.Event()
        self.created = int(time.time())

    def load(self) -> None:
        """Load the model and start the engine (runs on its own thread)."""
        try:
            lm = self.loader()
            self.sampling = lm.sampling_defaults(self.options.sampling_defaults)
            # decoders and encoder-decoders generate; encoders only embed
            if isinstance(lm.model, (DecoderLM, Seq2SeqLM)):
                self.engine = Engine(lm, self.metrics, max_batch=self.options.max_batch,
                                     max_queue=self.options.max_queue,
                                     kv_budget_mb=self.options.kv_budget_mb)
                self.engine.start()
            self.lm = lm
            self.ready.set()
            rows = (f"; {self.engine.max_batch} KV cache rows of {self.engine.row_len} tokens"
                    if self.engine else "")
            log.info("model %s ready%s", self.options.model_name, rows)
        except Exception as exc:  # reported by /health; the server stays up to say so
            log.exception("loading the model failed")
            self.error = f"loading the model failed: {exc}"

    def require_engine(self) -> Engine:
        """The engine, or 503 while loading / 400 for a model that cannot generate."""
        self._require_ready()
        if self.engine is None:
            raise APIError(400, f"model {self.options.model_name} is an encoder: it serves "
                           "/v1/embeddings, not completions", param="model",
                           code="model_not_supported")
        return self.engine

    def require_embedder(self) -> Any:
        """The LM if it embeds, else 400."""
        self._require_ready()
        if not hasattr(self.lm, "embed"):
            raise APIError(400, f"model {self.options.model_name} does not embed",
                           param="model", code="model_not_supported")
        return self.lm

    def _require_ready(self) -> None:
        if not self.ready.is_set():
            message = self.error or "the model is still loading"
            raise APIError(503, message, code="model_not_ready", headers={"Retry-After": "2"})

    def check_model(self, name: str) -> None:
        """404 for a model this server does not serve."""
        if name != self.options.model_name:
            raise APIError(404, f"The model `{name}` does not exist; this server serves "
                           f"`{self.options.model_name}`", param="model", code="model_not_found")


def create_app(loader: Callable[[], Any], options: ServeOptions) -> FastAPI:
    """The FastAPI app serving the model `loader()` returns (loaded at startup)."""
    state = ServerState(loader, options)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=state.load, name="zenlm-load", daemon=True).start()
        yield
        if state.engine is not None:
            await asyncio.to_thread(state.engine.shutdown)

    app = FastAPI(title="zenlm", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.server = state
    _add_error_handlers(app)
    _add_routes(app, state)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.add_middleware(Gate, state=state)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = {404: f"no route {request.method} {request.url.path}",
                   405: f"method {request.method} is not allowed on {request.url.path}"}
        return APIError(exc.status_code, message.get(exc.status_code, str(exc.detail)),
                        code="not_found" if exc.status_code == 404 else None).response()

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return APIError(500, "internal server error", kind="server_error").response()


def _add_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/health")
    async def health() -> JSONResponse:
        if state.ready.is_set():
            return JSONResponse({"status": "ok", "model": state.options.model_name})
        status = "failed" if state.error else "loading"
        return JSONResponse({"status": status, "error": state.error}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(state)]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str) -> dict[str, Any]:
        state.check_model(name)
        return _model_card(state)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = parse(ChatCompletionRequest, await request.body())
        return await _generate(request, state, body, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = parse(CompletionRequest, await request.body())
        return await _generate(request, state, body, chat=False)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> dict[str, Any]:
        body = parse(EmbeddingRequest, await request.body())
        state.check_model(body.model)
        lm = state.require_embedder()
        texts = [body.input] if isinstance(body.input, str) else body.input
        vectors = await asyncio.to_thread(lm.embed, texts)  # (N, d)
        tokens = sum(len(lm.tokenizer.encode(t)) for t in texts)
        return {"object": "list", "model": body.model,
                "data": [{"object": "embedding", "index": i,
                          "embedding": _encode_vector(v, body.encoding_format)}
                         for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    @app.get("/", include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"))


def _encode_vector(vector: Any, encoding: str) -> list[float] | str:
    """A list of floats, or base64 of little-endian float32 (what the openai client asks)."""
    if encoding == "base64":
        return base64.b64encode(vector.float().numpy().astype("<f4").tobytes()).decode()
    return vector.tolist()


def _model_card(state: ServerState) -> dict[str, Any]:
    return {"id": state.options.model_name, "object": "model", "created": state.created,
            "owned_by": "zenlm"}


def parse(model: type, body: bytes) -> Any:
    """Validate a JSON body; 400 naming the first offending parameter."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        loc = error["loc"]
        if error["type"] == "json_invalid":
            raise APIError(400, f"the body is not valid JSON: {error['msg']}",
                           code="invalid_json") from None
        if not loc:
            raise APIError(400, "the body must be a JSON object", code="invalid_type") from None
        param = _param(loc)
        detail = error["msg"]
        if error["type"] == "missing":
            detail = "this parameter is required"
        raise APIError(400, f"{param}: {detail} (got {_short(error.get('input'))})",
                       param=param, code="invalid_value") from None


def _param(loc: tuple) -> str:
    """`messages[0].content` from a pydantic location (union member tags left out)."""
    param = str(loc[0])
    if len(loc) > 1 and isinstance(loc[1], int):
        param += f"[{loc[1]}]"
        if len(loc) > 2 and loc[2] in {"role", "content", "name"}:
            param += f".{loc[2]}"
    return param


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---- generation ----------------------------------------------------------------------


def _prompts(state: ServerState, body: _Sampling, chat: bool) -> list[list[int]]:
    lm = state.lm
    if chat:
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        try:
            return [lm.encode_chat(messages)]
        except Exception as exc:  # the template refused these messages (e.g. role order)
            raise APIError(400, f"messages: the chat template failed: {exc}",
                           param="messages") from None
    prompt = body.prompt
    if isinstance(prompt, str):
        prompt = [prompt]
    if prompt and isinstance(prompt[0], int):
        prompt = [prompt]
    if not prompt:
        raise APIError(400, "prompt: give at least one prompt", param="prompt")
    vocab = lm.config.vocab_size
    out = []
    for item in prompt:
        ids = lm.tokenizer.encode(item) if isinstance(item, str) else list(item)
        if not ids or any(not 0 <= t < vocab for t in ids):
            raise APIError(400, f"prompt: empty, or token ids outside [0, {vocab})",
                           param="prompt")
        out.append(ids)
    return out


def _config(state: ServerState, body: _Sampling, prompts: list[list[int]], chat: bool,
            ) -> GenerationConfig:
    engine = state.require_engine()
    max_tokens = body.max_tokens
    if chat and body.max_completion_tokens is not None:
        max_tokens = body.max_completion_tokens
    used = max(engine.decoder_prompt_len(p) for p in prompts)
    room = engine.row_len - used
    param = "messages" if chat else "prompt"
    if _scoring_only(body, chat):  # no cache row: the prompt may fill the model's context
        max_tokens, room = 1, 1  # a valid config; nothing is generated
    if room < 1:
        raise APIError(400, f"{param}: {used} tokens leave no room in "
                       f"this server's context of {engine.row_len}", param=param,
                       code="context_length_exceeded")
    logprobs, top = (body.logprobs, body.top_logprobs or 0) if chat else (
        body.logprobs is not None, body.logprobs or 0)
    if chat and top and not logprobs:
        raise APIError(400, "top_logprobs: needs logprobs set to true", param="top_logprobs")
    if len(body.stop_list()) > 4:
        raise APIError(400, "stop: at most 4 stop sequences", param="stop")
    if body.seed is not None and not -(2**63) <= body.seed < 2**63:
        raise APIError(400, "seed: must fit in 64 bits", param="seed")
    if body.num_beams > 1:
        raise APIError(400, f"num_beams: beam search is not served (got {body.num_beams}); "
                       "use `zenlm generate --num-beams` or the Python API", param="num_beams")
    sampling = fill_sampling({key: getattr(body, key) for key in SAMPLING_KEYS}, state.sampling)
    config = GenerationConfig(
        max_new_tokens=max_tokens if max_tokens is not None else room, **sampling,
        presence_penalty=body.presence_penalty, frequency_penalty=body.frequency_penalty,
        seed=body.seed, stop=body.stop_list(), num_return_sequences=body.n,
        logprobs=logprobs, top_logprobs=top,
        stop_token_ids=() if body.ignore_eos else state.lm.stop_token_ids(),
    )
    try:
        config.validate()
    except InvalidParameter as exc:  # its message starts with our name for the parameter
        name = API_NAMES.get(exc.param, exc.param)
        raise APIError(400, name + exc.message.removeprefix(exc.param), param=name) from None
    problem = engine.check(prompts, config, generate=not _scoring_only(body, chat))
    if problem is not None:
        raise APIError(400, problem.message, param=problem.param,
                       code="context_length_exceeded" if problem.param == "max_tokens" else None)
    return config


def _scoring_only(body: _Sampling, chat: bool) -> bool:
    """`max_tokens: 0` (completions, with echo): score the prompt, generate nothing."""
    return not chat and body.max_tokens == 0


def _check_echo(state: ServerState, body: CompletionRequest) -> None:
    """400 for `echo` or `max_tokens: 0` where they cannot be served."""
    if body.max_tokens == 0 and not body.echo:
        raise APIError(400, "max_tokens: 0 generates nothing; it is allowed only with "
                       "echo: true (to return the prompt and its logprobs)", param="max_tokens")
    if body.echo and isinstance(state.lm.model, Seq2SeqLM):
        raise APIError(400, f"echo: model {state.options.model_name} is an encoder-decoder: "
                       "its prompt is the source, which it does not predict, so the prompt "
                       "has no logprobs to echo; use a decoder-only model", param="echo",
                       code="model_not_supported")


class _Bridge:
    """Carries engine events (engine thread) into an asyncio queue (the event loop)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    def emit(self, event: Event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass


async def _generate(request: Request, state: ServerState, body: _Sampling, chat: bool,
                    ) -> Response:
    state.check_model(body.model)
    engine = state.require_engine()
    if not chat:
        _check_echo(state, body)
    prompts = _prompts(state, body, chat)
    config = _config(state, body, prompts, chat)
    bridge = _Bridge()
    # echo with logprobs: the engine scores the prompts (top `logprobs` alternatives)
    score = body.logprobs if not chat and body.echo else None
    job = EngineRequest(prompts, config, bridge.emit, ignore_eos=body.ignore_eos,
                        score_prompts=score, generate=not _scoring_only(body, chat))
    try:
        engine.submit(job)
    except QueueFullError as exc:
        raise APIError(429, str(exc), code="rate_limit_exceeded",
                       headers={"Retry-After": str(exc.retry_after)}) from None
    formatter = sse.Formatter(state.lm.tokenizer, body, chat, prompts)
    if body.stream:
        return StreamingResponse(_stream(job, bridge, formatter), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return JSONResponse(await _collect(request, job, bridge, formatter))


async def _stream(job: EngineRequest, bridge: _Bridge, formatter: sse.Formatter,
                  ) -> AsyncIterator[str]:
    # Starlette cancels this generator when the client disconnects: `finally` then
    # cancels the sequences, which leave the batch at the engine's next step.
    try:
        yield formatter.start()
        while True:
            event = await bridge.queue.get()
            if isinstance(event, Failed):
                yield sse.event(error_body(event.message, "server_error"))
                return
            for chunk in formatter.chunks(event):
                yield chunk
            if isinstance(event, Done):
                yield sse.DONE
                return
    finally:
        job.cancel()


async def _collect(request: Request, job: EngineRequest, bridge: _Bridge,
                   formatter: sse.Formatter) -> dict[str, Any]:
    checked = time.monotonic()
    try:
        while True:
            try:
                event = await asyncio.wait_for(bridge.queue.get(), timeout=0.25)
            except TimeoutError:
                event = None
            # Events may never pause for long: look for a gone client by the clock.
            if time.monotonic() - checked > 0.25:
                checked = time.monotonic()
                if await request.is_disconnected():
                    raise APIError(499, "client disconnected")
            if isinstance(event, Failed):
                raise APIError(500, event.message, kind="server_error")
            if isinstance(event, (PromptScores, Delta)):
                formatter.add(event)
            elif isinstance(event, Done):
                return formatter.response(event)
    finally:
        job.cancel()
