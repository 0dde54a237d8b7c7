"""What the engine sends back for a request: tokens, prompt scores, the end, or a failure."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenInfo:
    """One generated token, with its log-probability when the request asked for it."""

    token: int
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None


@dataclass
class Delta:
    """New output of one choice: text that became safe to show, and its tokens."""

    choice: int
    text: str
    tokens: list[TokenInfo]
    finish_reason: str | None = None  # "stop" or "length" on the choice's last delta


@dataclass
class PromptScores:
    """The log-probabilities of one prompt's tokens (`echo` with `logprobs`).

    `tokens[0]` has no logprob (nothing precedes it); every other token has its own
    log-probability given the tokens before it, and its top alternatives.
    """

    prompt: int
    tokens: list[TokenInfo]


@dataclass
class Done:
    """A request finished: every choice has ended."""

    prompt_tokens: int
    completion_tokens: int


@dataclass
class Failed:
    """A request failed; the others go on."""

    message: str


Event = PromptScores | Delta | Done | Failed
