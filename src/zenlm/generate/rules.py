"""Rules that forbid or force tokens, whatever chooses them: one mask for every driver.

transformers' `min_new_tokens`, `no_repeat_ngram_size`, `forced_bos_token_id` and
`forced_eos_token_id` logits processors, with their semantics: a forbidden token's
score becomes -inf; a forced token's becomes 0 and every other one -inf (in beam
search, where the rules act on log-probabilities, a forced step thus adds 0 to its
beam's score). A `Sequence` applies its rules before its token is sampled
(generate/core.py), beam search before it ranks continuations (generate/beam.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch

from zenlm.errors import InvalidParameter
from zenlm.generate.config import GenerationConfig


@dataclass(frozen=True)
class TokenRules:
    """The token rules of one generation config (build with `TokenRules.of`).

    Attributes:
        min_new_tokens: Stop tokens are forbidden while fewer were generated.
        no_repeat_ngram_size: n; an n-gram of the history may not occur twice (0: off).
        forced_bos: Forced first generated token, or None.
        forced_eos: Forced token of the last allowed step, or None.
        stop_ids: The tokens `min_new_tokens` forbids.
    """

    min_new_tokens: int = 0
    no_repeat_ngram_size: int = 0
    forced_bos: int | None = None
    forced_eos: int | None = None
    stop_ids: tuple[int, ...] = ()

    @classmethod
    def of(
        cls, config: GenerationConfig, stop_ids: Iterable[int], vocab_size: int
    ) -> TokenRules | None:
        """The rules `config` asks for, or None when it asks for none.

        Raises:
            InvalidParameter: a forced token id outside the vocabulary.
        """
        for name in ("forced_bos_token_id", "forced_eos_token_id"):
            value = getattr(config, name)
            if value is not None and not 0 <= value < vocab_size:
                raise InvalidParameter(name, f"{name} must be a token id in [0, {vocab_size}), "
                                             f"got {value!r}")
        stops = tuple(sorted(set(stop_ids))) if config.min_new_tokens else ()
        rules = cls(len(stops) and config.min_new_tokens, config.no_repeat_ngram_size,
                    config.forced_bos_token_id, config.forced_eos_token_id, stops)
        return None if rules == cls() else rules

    def apply(
        self, scores: torch.Tensor, history: Seq[int], generated: int, remaining: int
    ) -> torch.Tensor:
        """One row's scores under the rules.

        Args:
            scores: (V,) logits or log-probabilities of the next token.
            history: The decoder's tokens so far (its prompt, then the generated ones).
            generated: How many of them were generated.
            remaining: Tokens still allowed, this one included (1: the last step).

        Returns:
            (V,) the scores, a new tensor when a rule changed them.
        """
        # transformers applies forced EOS after forced BOS: at a one-token limit it wins.
        if self.forced_eos is not None and remaining == 1:
            return _only(scores, self.forced_eos)
        if self.forced_bos is not None and generated == 0:
            return _only(scores, self.forced_bos)
        banned = list(self.stop_ids) if generated < self.min_new_tokens else []
        if self.no_repeat_ngram_size:
            banned += repeated_ngram_ends(history, self.no_repeat_ngram_size)
        if not banned:
            return scores
        out = scores.clone()
        out[torch.tensor(banned, device=scores.device)] = float("-inf")
        return out


def repeated_ngram_ends(history: Seq[int], n: int) -> list[int]:
    """Tokens that would complete an n-gram already in `history` (transformers' rule).

    The last n - 1 tokens are the new n-gram's start; every earlier occurrence of them
    bans the token that followed it.
    """
    if len(history) + 1 < n:
        return []
    start = tuple(history[len(history) - n + 1:]) if n > 1 else ()
    return [history[i + n - 1] for i in range(len(history) - n + 1)
            if tuple(history[i:i + n - 1]) == start]


def _only(scores: torch.Tensor, token: int) -> torch.Tensor:
    out = torch.full_like(scores, float("-inf"))
    out[token] = 0.0
    return out
