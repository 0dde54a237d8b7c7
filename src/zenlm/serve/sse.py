"""OpenAI's response shapes: streamed chunks (server-sent events) and whole responses."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from zenlm.serve.engine import Delta, Done, PromptScores, TokenInfo

DONE = "data: [DONE]\n\n"
FINGERPRINT = "zenlm"


def event(payload: dict[str, Any]) -> str:
    """One server-sent event carrying `payload` as JSON."""
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


class Formatter:
    """Turns one request's engine events into OpenAI chunks or one OpenAI response.

    With `echo` (text completions), each choice's text starts with its prompt, and its
    logprobs with the prompt's tokens (PromptScores events: the first token has none).

    Args:
        tokenizer: Decodes token ids for logprobs.
        body: The validated request.
        chat: Chat completions (else text completions).
        prompts: Token ids of each prompt (choices = prompts x n).
    """

    def __init__(self, tokenizer: Any, body: Any, chat: bool, prompts: list[list[int]]) -> None:
        self.tokenizer, self.body, self.chat = tokenizer, body, chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.object = "chat.completion" if chat else "text_completion"
        self.choices = len(prompts) * body.n
        self.logprobs = bool(body.logprobs) if chat else body.logprobs is not None
        self.usage_in_stream = bool(body.stream_options and body.stream_options.include_usage)
        self.texts = [""] * self.choices
        self.finish: list[str | None] = [None] * self.choices
        self.tokens: list[list[TokenInfo]] = [[] for _ in range(self.choices)]
        self.echo = not chat and body.echo
        # the prompt's text as sent, or its tokens decoded; and its scored tokens
        self.echoed = _prompt_texts(tokenizer, body.prompt, prompts) if self.echo else []
        self.prompt_tokens: list[list[TokenInfo]] = [[] for _ in prompts]
        self.scoring_only = not chat and body.max_tokens == 0

    # ---- streaming ---------------------------------------------------------------------

    def start(self) -> str:
        """The first chunks: each choice's assistant role (chat) or echoed prompt.

        An echoed prompt with logprobs waits for its PromptScores instead.
        """
        if self.echo and not self.logprobs:
            return "".join(self._chunk(i, {"text": self._echo_text(i)})
                           for i in range(self.choices))
        if not self.chat:
            return ""
        return "".join(self._chunk(i, {"delta": {"role": "assistant", "content": ""}})
                       for i in range(self.choices))

    def chunks(self, item: PromptScores | Delta | Done) -> list[str]:
        """The chunks of one event."""
        if isinstance(item, PromptScores):
            self.prompt_tokens[item.prompt] = item.tokens
            return [self._chunk(i, {"text": self._echo_text(i),
                                    "logprobs": self._logprobs(item.tokens, 0)})
                    for i in self._choices_of(item.prompt)]
        if isinstance(item, Done):
            out = []
            if self.scoring_only:  # nothing was generated: every choice ends here
                out = [self._chunk(i, {"text": ""}, "length") for i in range(self.choices)]
            if self.usage_in_stream:
                out.append(event(self._envelope([], usage=_usage(item))))
            return out
        out = []
        if item.text or self.logprobs:
            content = {"delta": {"content": item.text}} if self.chat else {"text": item.text}
            if self.logprobs:
                offset = len(self._echo_text(item.choice)) + len(self.texts[item.choice])
                content["logprobs"] = self._logprobs(item.tokens, offset)
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

    def add(self, item: PromptScores | Delta) -> None:
        """Accumulate one event of a non-streamed request."""
        if isinstance(item, PromptScores):
            self.prompt_tokens[item.prompt] = item.tokens
            return
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
                choice["text"] = self._echo_text(i) + text
            choice["logprobs"] = self._whole_logprobs(i) if self.logprobs else None
            choice["finish_reason"] = self.finish[i] or ("length" if self.scoring_only else None)
            choices.append(choice)
        return {"id": self.id, "object": self.object, "created": self.created,
                "model": self.body.model, "system_fingerprint": FINGERPRINT,
                "choices": choices, "usage": _usage(done)}

    # ---- echo --------------------------------------------------------------------------

    def _choices_of(self, prompt: int) -> range:
        return range(prompt * self.body.n, (prompt + 1) * self.body.n)

    def _echo_text(self, choice: int) -> str:
        return self.echoed[choice // self.body.n] if self.echo else ""

    def _whole_logprobs(self, choice: int) -> dict[str, Any]:
        """A choice's logprobs: its prompt's (with echo), then its generated tokens'."""
        generated = self._logprobs(self.tokens[choice], len(self._echo_text(choice)))
        if not self.echo:
            return generated
        prompt = self._logprobs(self.prompt_tokens[choice // self.body.n], 0)
        return {key: prompt[key] + generated[key] for key in prompt}

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
            # null for an echoed prompt's first token, which has no logprob, as OpenAI does
            "top_logprobs": [None if t.logprob is None else self._top(t.top) for t in tokens],
            "text_offset": offsets,
        }

    def _top(self, top: list[tuple[int, float]] | None) -> dict[str, float]:
        """{token text: logprob}, most likely first.

        Tokens that decode alike (pieces of one character) keep the likeliest's value,
        so the dict's max is the top logprob (lm-eval's is_greedy reads it).
        """
        out: dict[str, float] = {}
        for token, logprob in top or []:
            out.setdefault(self._token(token), logprob)
        return out

    def _chat_entry(self, info: TokenInfo) -> dict[str, Any]:
        text = self._token(info.token)
        return {"token": text, "logprob": info.logprob, "bytes": list(text.encode()),
                "top_logprobs": [
                    {"token": (s := self._token(i)), "logprob": lp, "bytes": list(s.encode())}
                    for i, lp in (info.top or [])
                ]}


def _prompt_texts(tokenizer: Any, sent: str | list, prompts: list[list[int]]) -> list[str]:
    """Each prompt's text: as the client sent it, or (token ids) decoded."""
    if isinstance(sent, str):
        return [sent]
    if sent and isinstance(sent[0], str):
        return list(sent)
    return [tokenizer.decode(ids, skip_special_tokens=False) for ids in prompts]


def _usage(done: Done) -> dict[str, int]:
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens}
