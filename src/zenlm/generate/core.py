"""The generation core every driver shares: a row's state, one prefill, one sampler.

A `Sequence` is one row being generated: its sampling parameters and random
generator, its penalty state, its stop tokens and stop strings (through
`TextStream`), its length limit, and, once it ends, its finish reason. `prefill`
runs prompts of different lengths into a KV cache at once; `decode_step` runs the
model's one-token step (the compiled one when `compile_decoding` installed it);
`sample_rows` picks every row's token with that row's own parameters and draws;
`advance` does both and lets each row record its token.

The drivers: `stream_batch` (generate/decode.py, behind the `LM` API and the CLI),
the serving `Engine` (continuous batching), beam search and speculative decoding.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any

import torch

from zenlm.generate.config import GenerationConfig
from zenlm.generate.rules import TokenRules
from zenlm.generate.sampling import SamplingParams, choose_tokens, token_logprobs
from zenlm.generate.text import TextStream
from zenlm.models import DecoderLM, Seq2SeqLM
from zenlm.nn import KVCache
from zenlm.tokenizer import Tokenizer


@dataclass
class TokenEvent:
    """One token of one sequence, as a driver produces it.

    Attributes:
        row: The sequence's index among its request's sequences (`Sequence.index`).
        token: The token id.
        logprob: Its log-probability under the model (when asked for).
        top_logprobs: The most likely alternatives (token, logprob) (when asked for).
        finish_reason: "stop" or "length" on a sequence's last token.
        text: Text that became safe to show (empty without a tokenizer).
    """

    row: int
    token: int
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None
    finish_reason: str | None = None
    text: str = ""


class Sequence:
    """One row being generated, and every rule about it.

    Args:
        prompt: Its prompt's token ids.
        config: Validated generation parameters.
        vocab_size: The model's vocabulary (sizes the penalty state).
        index: Its index among its request's sequences: prompt p's choice j is
            p x num_return_sequences + j. A seeded sequence draws from seed + index,
            so every choice is reproducible on its own, whatever else runs.
        stop_ids: Tokens that end it (default: config.stop_token_ids).
        tokenizer: Turns its tokens into text and applies config.stop (stop strings
            need one; without it they are not checked).
        context: The model's context: the length limit is at most this.
        cross_cache: For encoder-decoder models: the cross-attention keys and values
            of this row's encoder output, computed once at admission and read by
            every decode step (decoder-only models leave it None).
    """

    def __init__(
        self, prompt: Seq[int], config: GenerationConfig, *, vocab_size: int, index: int = 0,
        stop_ids: Iterable[int] | None = None, tokenizer: Tokenizer | None = None,
        context: int | None = None, cross_cache: Any = None,
    ) -> None:
        self.prompt, self.config, self.index = list(prompt), config, index
        self.params: SamplingParams = config.sampling()
        self.stop_ids = frozenset(config.stop_token_ids if stop_ids is None else stop_ids)
        self.limit = len(self.prompt) + config.max_new_tokens
        if context is not None:
            self.limit = min(self.limit, context)
        self.text = TextStream(tokenizer, config.stop) if tokenizer is not None else None
        self.rules = TokenRules.of(config, self.stop_ids, vocab_size)
        self.cross_cache = cross_cache
        self.tokens: list[int] = []
        self.finish_reason: str | None = None
        self.generator = None
        if config.seed is not None:
            self.generator = torch.Generator().manual_seed((config.seed + index) % 2**63)
        self.seen = self.counts = None
        if self.params.repetition_penalty != 1.0:  # prompt tokens count as seen
            self.seen = torch.zeros(vocab_size, dtype=torch.bool)
            self.seen[torch.tensor(self.prompt)] = True
        if self.params.presence_penalty or self.params.frequency_penalty:
            self.counts = torch.zeros(vocab_size, dtype=torch.int32)

    @property
    def finished(self) -> bool:
        """True once it has ended (see `finish_reason`)."""
        return self.finish_reason is not None

    @property
    def wants_logprobs(self) -> bool:
        """Whether its tokens carry log-probabilities."""
        return bool(self.config.logprobs or self.config.top_logprobs)

    def constrain(self, scores: torch.Tensor) -> torch.Tensor:
        """Its next token's scores (V,) under its token rules (min_new_tokens, n-grams, forced)."""
        if self.rules is None:
            return scores
        return self.rules.apply(scores, self.prompt + self.tokens, len(self.tokens),
                                self.limit - len(self.prompt) - len(self.tokens))

    def uniform(self) -> float:
        """One draw in [0, 1) from its own generator (its seed)."""
        return float(torch.rand((), generator=self.generator))

    def accept(
        self, token: int, logprob: float | None = None,
        top: list[tuple[int, float]] | None = None,
    ) -> TokenEvent:
        """Record its next token: penalties, text, and whether it ends here.

        It ends ("stop") on a stop token, which is kept in its tokens but not in its
        text, or on a stop string, the text ending just before it; else ("length")
        at its length limit.
        """
        if self.finished:
            raise RuntimeError(f"sequence {self.index} already ended ({self.finish_reason})")
        self.tokens.append(token)
        if self.seen is not None:
            self.seen[token] = True
        if self.counts is not None:
            self.counts[token] += 1
        text = ""
        if token in self.stop_ids:
            self.finish_reason, text = "stop", self._flush()
        else:
            if self.text is not None:
                text = self.text.push(token)
                if self.text.stopped:
                    self.finish_reason = "stop"
            if not self.finished and len(self.prompt) + len(self.tokens) >= self.limit:
                self.finish_reason = "length"
                text += self._flush()
        return TokenEvent(self.index, token, logprob, top, self.finish_reason, text)

    def _flush(self) -> str:
        """The text not yet shown, at the end: bytes of an unfinished character included."""
        if self.text is None:
            return ""
        tail = self.text.finish()
        if self.text.stopped:
            return tail
        full = self.text.tokenizer.decode(self.text.ids, skip_special_tokens=True)
        # An unfinished character decodes to U+FFFD: show it, as a whole decode would.
        if len(full) > self.text.emitted and full.startswith(self.text.text[: self.text.emitted]):
            tail += full[self.text.emitted:]
            self.text.emitted = len(full)
        return tail


def open_rows(
    model: DecoderLM | Seq2SeqLM, prompts: Seq[Seq[int]], max_new_tokens: int, *,
    cross_cache: bool = True,
) -> tuple[list[list[int]], KVCache]:
    """The decoder prompts of a batch of rows, and their empty KV cache.

    A decoder-only model's prompts are its decoder prompts. An encoder-decoder's
    prompts are sources: they are encoded here, once, their cross-attention context
    rides in the cache (`cache.cross`, reordered with its rows), and every row's
    decoder prompt is the start token.

    Args:
        model: The model.
        prompts: Token ids per row (sources for an encoder-decoder).
        max_new_tokens: Decoder slots per row past the longest decoder prompt (the
            cache holds at most the model's context).
        cross_cache: Project the encoder output into cross-attention keys and values
            once (True), or at every step (config.use_cross_cache=False).
    """
    context = model.config.context_length
    if not isinstance(model, Seq2SeqLM):
        max_len = min(context, max(len(p) for p in prompts) + max_new_tokens)
        return [list(p) for p in prompts], model.new_cache(len(prompts), max_len)
    longest = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), longest, dtype=torch.long)
    mask = torch.zeros(len(prompts), longest, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, : len(prompt)] = torch.tensor(prompt)
        mask[row, : len(prompt)] = 1
    padded = bool((mask == 0).any())
    max_len = min(context, 1 + max_new_tokens)
    cache = model.start_cache(ids, mask if padded else None, max_len, cached=cross_cache)
    return [[model.start_id] for _ in prompts], cache


def prefill(model: DecoderLM, prompts: Seq[Seq[int]], cache: KVCache) -> torch.Tensor:
    """Run prompts of different lengths into `cache` at once (one row each).

    Args:
        model: The decoder.
        prompts: P prompts' token ids.
        cache: A cache of P rows, empty.

    Returns:
        (P, V) float32 logits of the token after each prompt.
    """
    device = cache.lengths.device
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    ids = torch.zeros(len(prompts), int(lengths.max()), dtype=torch.long, device=device)
    for row, prompt in enumerate(prompts):
        ids[row, : len(prompt)] = torch.tensor(prompt, device=device)
    # Right padding is invisible to real tokens under the causal mask; the cache then
    # forgets the padded slots by taking each row's true length.
    hidden = model.hidden_states(ids, cache=cache)  # (P, T, d)
    cache.set_lengths(lengths)
    last = hidden[torch.arange(len(prompts), device=device), lengths - 1]  # (P, d)
    return model.lm_head(last).float()  # (P, V)


def decode_step(model: DecoderLM, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """Logits (B, V) float32 after feeding tokens (B,) through the model's decode step.

    `model.step` is the compiled step when `compile_decoding` installed one.
    """
    return model.step(tokens[:, None], cache)[:, 0].float()


def sample_rows(logits: torch.Tensor, seqs: Seq[Sequence]) -> list[int]:
    """Each row's token, chosen with that row's own parameters, penalties and draw.

    Each row's token rules apply first (`Sequence.constrain`). Rows with the same
    parameters are warped together (one softmax and cumsum); each then inverts its
    CDF at a uniform draw from its own generator.

    Args:
        logits: (B, V) next-token logits; row b belongs to seqs[b].
        seqs: The B sequences.

    Returns:
        B token ids.
    """
    ruled = [row for row, seq in enumerate(seqs) if seq.rules is not None]
    if ruled:
        logits = logits.clone()
        for row in ruled:
            logits[row] = seqs[row].constrain(logits[row])
    groups: dict[SamplingParams, list[int]] = collections.defaultdict(list)
    for row, seq in enumerate(seqs):
        groups[seq.params].append(row)
    out = [0] * len(seqs)
    for params, rows in groups.items():
        members = [seqs[r] for r in rows]
        seen = torch.stack([s.seen for s in members]) if members[0].seen is not None else None
        counts = (torch.stack([s.counts for s in members])
                  if members[0].counts is not None else None)
        uniforms = None if params.greedy else torch.tensor([s.uniform() for s in members])
        index = torch.tensor(rows, device=logits.device)
        tokens = choose_tokens(logits[index], params, uniforms,
                               seen=_to(seen, logits), counts=_to(counts, logits))
        for row, token in zip(rows, tokens.tolist(), strict=True):
            out[row] = token
    return out


def _to(state: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if state is None else state.to(like.device)


def logprob_rows(
    logits: torch.Tensor, seqs: Seq[Sequence], tokens: Seq[int]
) -> list[tuple[float | None, list[tuple[int, float]] | None]]:
    """(logprob, top alternatives) of each row's token, for the rows that ask for them.

    Log-probabilities are the model's own (before penalties and sampling controls).
    """
    out: list[tuple[float | None, list[tuple[int, float]] | None]] = [(None, None)] * len(seqs)
    rows = [r for r, seq in enumerate(seqs) if seq.wants_logprobs]
    if not rows:
        return out
    top = max(seqs[r].config.top_logprobs for r in rows)
    index = torch.tensor(rows, device=logits.device)
    chosen, values, ids = token_logprobs(logits[index], torch.tensor(
        [tokens[r] for r in rows], device=logits.device), top)
    for i, row in enumerate(rows):
        k = seqs[row].config.top_logprobs
        alternatives = None
        if k:
            alternatives = list(zip(ids[i, :k].tolist(), values[i, :k].tolist(), strict=True))
        out[row] = (float(chosen[i]), alternatives)
    return out


def advance(logits: torch.Tensor, seqs: Seq[Sequence]) -> list[TokenEvent]:
    """Choose each row's token and let its sequence record it; one event per row."""
    tokens = sample_rows(logits, seqs)
    scores = logprob_rows(logits, seqs, tokens)
    return [seq.accept(token, *score)
            for seq, token, score in zip(seqs, tokens, scores, strict=True)]
