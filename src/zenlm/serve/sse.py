"""OpenAI's response shapes: streamed chunks (server-sent events) and whole responses."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from zenlm.serve.engine import Delta, Done, TokenInfo

DONE = "data: [DONE]\n\n"
FINGERPRINT = "zenlm"


def event(payload: dict[str, Any]) -> str:
    """One server-sent event carrying `payload` as JSON."""
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


class Formatter:
    """Turns one request's engine events into OpenAI chunks or one OpenAI response.

    Args:
        tokenizer: Decodes token ids for logprobs.
        body: The validated request.
        chat: Chat completions (else text completions).
        n_prompts: Prompts in the request (choices = prompts x n).
    """

    def __init__(self, tokenizer: Any, body: Any, chat: bool, n_prompts: int) -> None:
        self.tokenizer, self.body, self.chat = tokenizer, body, chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.object = "chat.completion" if chat else "text_completion"
        self.choices = n_prompts * body.n
        self.logprobs = bool(body.logprobs) if chat else body.logprobs is not None
        self.usage_in_stream = bool(body.stream_options and body.stream_options.include_usage)
        self.texts = [""] * self.choices
        self.finish: list[str | None] = [None] * self.choices
        self.tokens: list[list[TokenInfo]] = [[] for _ in range(self.choices)]

    # ---- streaming ---------------------------------------------------------------------

    def start(self) -> str:
        """The first chunks: the assistant role of each choice (chat only)."""
        if not self.chat:
            return ""
        return "".join(self._chunk(i, {"delta": {"role": "assistant", "content": ""}})
                       for i in range(self.choices))

    def chunks(self, item: Delta | Done) -> list[str]:
        """The chunks of one event."""
        if isinstance(item, Done):
            if not self.usage_in_stream:
                return []
            return [event(self._envelope([], usage=_usage(item)))]
        out = []
        if item.text or self.logprobs:
            content = {"delta": {"content": item.text}} if self.chat else {"text": item.text}
            if self.logprobs:
                content["logprobs"] = self._logprobs(item.tokens, len(self.texts[item.choice]))
            self.texts[item.choice] += item.text
            out.append(self._chunk(item.choice, content))
        if item.finish_reason is not None:
            content = {"delta": {}} if self.chat else {"text": ""}
            out.append(self._chunk(item.choice, content, item.finish_reason))
        return out

    def _chunk(self, index: int, content: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": index, **content, "finish_reason": finish}
        choice.setdefault("logprobs", None)
        return event(self._envelope([choice], usage=None))

    def _envelope(self, choices: list[dict[str, Any]], usage: Any) -> dict[str, Any]:
        payload = {"id": self.id, "object": self.object + (".chunk" if self.chat else ""),
                   "created": self.created, "model": self.body.model,
                   "system_fingerprint": FINGERPRINT, "choices": choices}
        if self.usage_in_stream:
            payload["usage"] = usage
        return payload

    # ---- whole responses ---------------------------------------------------------------

    def add(self, item: Delta) -> None:
        """Accumulate one event of a non-streamed request."""
        self.texts[item.choice] += item.text
        self.tokens[item.choice].extend(item.tokens)
        if item.finish_reason is not None:
            self.finish[item.choice] = item.finish_reason

    def response(self, done: Done) -> dict[str, Any]:
        """The whole response, once the request is done."""
        choices = []
        for i, text in enumerate(self.texts):
            choice: dict[str, Any] = {"index": i}
            if self.chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            choice["logprobs"] = self._logprobs(self.tokens[i], 0) if self.logprobs else None
            choice["finish_reason"] = self.finish[i]
            choices.append(choice)
        return {"id": self.id, "object": self.object, "created": self.created,
                "model": self.body.model, "system_fingerprint": FINGERPRINT,
                "choices": choices, "usage": _usage(done)}

    # ---- logprobs ----------------------------------------------------------------------

    def _token(self, token: int) -> str:
        return self.tokenizer.decode([token], skip_special_tokens=False)

    def _logprobs(self, tokens: list[TokenInfo], offset: int) -> dict[str, Any]:
        if self.chat:
            return {"content": [self._chat_entry(t) for t in tokens]}
        strings = [self._token(t.token) for t in tokens]
        offsets = []
        for s in strings:
            offsets.append(offset)
            offset += len(s)
        return {
            "tokens": strings,
            "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [{self._token(i): lp for i, lp in (t.top or [])} for t in tokens],
            "text_offset": offsets,
        }

    def _chat_entry(self, info: TokenInfo) -> dict[str, Any]:
        text = self._token(info.token)
        return {"token": text, "logprob": info.logprob, "bytes": list(text.encode()),
                "top_logprobs": [
                    {"token": (s := self._token(i)), "logprob": lp, "bytes": list(s.encode())}
                    for i, lp in (info.top or [])
                ]}


def _usage(done: Done) -> dict[str, int]:
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens}
