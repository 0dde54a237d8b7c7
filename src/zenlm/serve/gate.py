"""The gate every request passes first: metrics by route and status, auth, body size."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable
from typing import Any

from zenlm.serve.errors import APIError

PUBLIC_PATHS = {"/health"}  # the only route answered without a key
PAGE_PATHS = ("/", "/static/")  # browsers get a Basic-auth prompt for these


class Gate:
    """Pure ASGI middleware: count statuses, check the key, cap the body size.

    Auth comes before reading any body, so an unauthenticated client cannot make
    the server read (or buffer) megabytes.
    """

    def __init__(self, app: Any, state: Any) -> None:
        self.app, self.state = app, state
        self.routes = {"/health", "/metrics", "/v1/models", "/v1/chat/completions",
                       "/v1/completions", "/v1/embeddings", "/"}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in self.routes else "other"
        status = {"code": 500}

        async def counting_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._gated(scope, receive, counting_send)
        finally:
            self.state.metrics.requests.labels(route, str(status["code"])).inc()

    async def _gated(self, scope: dict, receive: Callable, send: Callable) -> None:
        path = scope["path"]
        key = self.state.options.api_key
        if key is not None and path not in PUBLIC_PATHS and not _authorized(scope, key):
            page = path == "/" or path.startswith(PAGE_PATHS[1])
            challenge = 'Basic realm="zenlm"' if page else "Bearer"
            error = APIError(401, "missing or invalid API key: send Authorization: Bearer "
                             "<key>", code="invalid_api_key",
                             headers={"WWW-Authenticate": challenge})
            await error.response()(scope, receive, send)
            return
        limit = self.state.options.max_body_bytes
        body = await _read_body(scope, receive, limit)
        if body is None:
            error = APIError(413, f"the request body is larger than {limit} bytes",
                             code="request_too_large")
            await error.response()(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)


def _authorized(scope: dict, key: str) -> bool:
    """Bearer <key>, or Basic with <key> as password (browsers on the playground)."""
    header = dict(scope["headers"]).get(b"authorization", b"")
    scheme, _, value = header.partition(b" ")
    scheme = scheme.lower()
    if scheme == b"basic":
        try:
            value = base64.b64decode(value.strip(), validate=True).partition(b":")[2]
        except (binascii.Error, ValueError):
            return False
    elif scheme != b"bearer":
        return False
    return hmac.compare_digest(value.strip(), key.encode())


async def _read_body(scope: dict, receive: Callable, limit: int) -> bytes | None:
    """The whole body, or None when it is over `limit` bytes (read no further)."""
    length = dict(scope["headers"]).get(b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        return None
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # a disconnect: the app sees an empty body and the client is gone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Callable) -> Callable:
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # then disconnects, as usual

    return replay
