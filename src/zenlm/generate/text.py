"""Token ids -> text, incrementally: UTF-8 safe, and aware of stop strings."""

from __future__ import annotations

from collections.abc import Sequence

from zenlm.tokenizer import Tokenizer

REPLACEMENT = "\ufffd"  # what a decoder gives for bytes that are not yet a whole character


class TextStream:
    """Turns a growing list of token ids into text deltas safe to show.

    A character that spans several byte-level tokens is held back until complete,
    and so is any tail that could be the start of a stop string. When a stop string
    appears, the text ends just before it.

    Args:
        tokenizer: Decodes ids.
        stop: Stop strings (empty: none).
        skip_special_tokens: Leave special tokens (e.g. <|im_end|>) out of the text.
    """

    def __init__(
        self, tokenizer: Tokenizer, stop: Sequence[str] = (), skip_special_tokens: bool = True
    ) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.skip = skip_special_tokens
        self.ids: list[int] = []
        self.text = ""  # all text decoded so far (complete characters)
        self.emitted = 0  # characters of `text` already returned
        self.stopped = False

    def push(self, token: int) -> str:
        """Add one token; return the text that became safe to show (maybe "")."""
        if self.stopped:
            return ""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=self.skip)
        if text.endswith(REPLACEMENT):
            return ""  # an incomplete character: wait for its other bytes
        self.text = text
        cut = self._stop_at()
        if cut is not None:
            self.stopped = True
            return self._emit_until(cut)
        return self._emit_until(len(text) - self._held_back())

    def finish(self) -> str:
        """Everything not yet returned (call once generation has ended)."""
        if self.stopped:
            return ""
        return self._emit_until(len(self.text))

    def _stop_at(self) -> int | None:
        # Search only where a stop string could newly end: from the last emitted
        # character minus the longest stop string.
        start = max(0, self.emitted - max((len(s) for s in self.stop), default=0))
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        return min(hits) if hits else None

    def _held_back(self) -> int:
        """Length of the longest tail of text that is a proper prefix of a stop string."""
        longest = 0
        for stop in self.stop:
            for size in range(min(len(stop) - 1, len(self.text)), longest, -1):
                if self.text.endswith(stop[:size]):
                    longest = size
                    break
        return longest

    def _emit_until(self, end: int) -> str:
        end = max(end, self.emitted)
        delta = self.text[self.emitted:end]
        self.emitted = end
        return delta
