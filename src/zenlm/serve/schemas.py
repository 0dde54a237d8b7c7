"""Request bodies of the OpenAI API, as strict pydantic models.

Strict: a string is not a number and 1.5 is not an integer, as OpenAI's own API
answers. Unknown fields are ignored (clients send fields we do not use, e.g. `user`).
Ranges follow OpenAI's documentation; a few vLLM-style extensions (top_k, min_p,
repetition_penalty, ignore_eos) expose the rest of the generation engine.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_N = 128  # choices per request the schema accepts; the engine may allow fewer
Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class StreamOptions(_Strict):
    """`stream_options`: whether the last chunk carries token usage."""

    include_usage: bool = False


class _Sampling(_Strict):
    """Fields shared by chat and text completions."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    # Sampling parameters left out (None) take the server's sampling defaults
    # (`zenlm serve --sampling-defaults`: the model's, or OpenAI's).
    temperature: Finite | None = Field(None, ge=0.0, le=2.0)
    top_p: Finite | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = Field(None)
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: Finite = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: Finite = Field(0.0, ge=-2.0, le=2.0)
    # Extensions, named as vLLM names them.
    top_k: int | None = Field(None, ge=0)
    min_p: Finite | None = Field(None, ge=0.0, lt=1.0)
    repetition_penalty: Finite | None = Field(None, gt=0.0)
    ignore_eos: bool = False
    num_beams: int = Field(1, ge=1)  # accepted so that > 1 is refused, not ignored

    def stop_list(self) -> list[str]:
        """Stop strings as a list (OpenAI allows up to 4)."""
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]


class TextPart(_Strict):
    """A text part of a message's content."""

    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    """One message of a conversation."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        """The content as one string."""
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatCompletionRequest(_Sampling):
    """`POST /v1/chat/completions`."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


class CompletionRequest(_Sampling):
    """`POST /v1/completions`."""

    prompt: str | list[str] | list[int] | list[list[int]]
    # 0 (with echo) scores the prompt without generating, as OpenAI's legacy API allows
    max_tokens: int | None = Field(None, ge=0)
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False  # the text starts with the prompt; logprobs cover its tokens too


class EmbeddingRequest(_Strict):
    """`POST /v1/embeddings`."""

    model: str
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
