"""The serving engine: continuous batching over one static, preallocated KV cache.

One background thread owns the model. Requests wait in a bounded queue; at every
decode step the engine admits waiting requests into free cache rows (prefilled
together in a cache of their own, then copied in with `KVCache.write_row`), runs the
model's decode step (the compiled one with `--compile`) over all occupied rows,
chooses each row's token with that row's own sampling parameters, penalties and
random generator, and frees rows whose sequence finished or whose client went away.
Sequences thus join and leave the running batch at every step.

An encoder-decoder's prompts are sources: admission encodes them (with the core's
`open_rows`), each row keeps its own cross-attention context (`Sequence.cross_cache`,
cut to its source's length), and a step reads the contexts of the rows it runs,
stacked (restacked only when rows join or leave). The engine always keeps the
projected keys and values (`use_cross_cache` is for the batch drivers' checks).

It is a driver of the generation core (zenlm.generate.core): each row is a core
`Sequence`, prefill is the core's `prefill`, tokens come from `sample_rows`, and the
sequence's own `accept` says when it ends, exactly as for `zenlm generate` and the
Python API, so a seeded request gives the same tokens through all three.

Results go back through a callback (`emit`) called on the engine thread; the HTTP
layer forwards them to its event loop.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

import torch

from zenlm.errors import InvalidParameter
from zenlm.generate import GenerationConfig, Sequence, TokenEvent, prefill, sample_rows
from zenlm.generate.core import decode_step, logprob_rows, open_rows
from zenlm.models import Seq2SeqLM
from zenlm.nn.kv_cache import CrossContext, KVCache
from zenlm.serve.events import Delta, Done, Event, Failed, PromptScores, TokenInfo
from zenlm.serve.metrics import Metrics
from zenlm.serve.scoring import score_prompts

log = logging.getLogger("zenlm.serve")
__all__ = ["Delta", "Done", "Engine", "Event", "Failed", "PromptScores", "QueueFullError",
           "Request", "TokenInfo"]  # the events are re-exported: the HTTP layer reads them here

PREFILL_TOKENS = 2048  # at most this many padded prompt tokens per batched prefill


class QueueFullError(Exception):
    """The waiting queue is at its limit (the HTTP layer answers 429)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("the server is at capacity; retry later")
        self.retry_after = retry_after


@dataclass(eq=False)  # compared and hashed by identity
class Request:
    """One API request: each prompt is answered `config.num_return_sequences` times.

    Attributes:
        prompts: Token ids of each prompt.
        config: Validated generation parameters (stop strings included).
        emit: Called on the engine thread with each Event of this request.
        ignore_eos: Generate through stop tokens (benchmarks, tests).
        score_prompts: Send each prompt's token log-probabilities (PromptScores) with
            this many top alternatives per token (None: do not score the prompts).
        generate: False to score the prompts only (the API's `max_tokens: 0`).
    """

    prompts: list[list[int]]
    config: GenerationConfig
    emit: Callable[[Event], None]
    ignore_eos: bool = False
    score_prompts: int | None = None
    generate: bool = True
    id: int = field(default_factory=itertools.count().__next__)
    submitted: float = field(default_factory=time.perf_counter)
    cancelled: bool = False
    finished: bool = False
    live: int = 0  # sequences still running
    completion_tokens: int = 0

    @property
    def rows_needed(self) -> int:
        """Cache rows this request occupies while it runs."""
        if not self.generate:
            return 0
        return len(self.prompts) * self.config.num_return_sequences

    def cancel(self) -> None:
        """Stop this request at the engine's next step (safe from any thread)."""
        self.cancelled = True


@dataclass(eq=False)
class _Row:
    """What occupies one cache row: a sequence of the generation core, and its request."""

    seq: Sequence
    request: Request
    last_token_at: float = 0.0


class Engine:
    """Continuous batching over `max_batch` cache rows; see the module docstring.

    Args:
        lm: A loaded zenlm LM (decoder with tokenizer).
        metrics: Where to count tokens, queue depth, running sequences and latencies.
        max_batch: Cache rows, i.e. sequences decoded together.
        max_queue: Requests allowed to wait for rows; more are refused (QueueFullError).
        kv_budget_mb: Memory for the KV cache; with max_batch it sets tokens per row
            (capped at the model's context).
    """

    def __init__(
        self, lm, metrics: Metrics, *, max_batch: int = 16, max_queue: int = 64,
        kv_budget_mb: float = 1024.0,
    ) -> None:
        if max_batch < 1 or max_queue < 0:
            raise ValueError(f"max_batch must be >= 1 and max_queue >= 0, got "
                             f"{max_batch} and {max_queue}")
        self.lm, self.model, self.metrics = lm, lm.model, metrics
        self.seq2seq = isinstance(self.model, Seq2SeqLM)
        self.cross: CrossContext | None = None  # the stacked contexts of rows [0, hi)
        self.max_batch, self.max_queue = max_batch, max_queue
        self.row_len = self._row_len(kv_budget_mb)
        self.cache = self.model.new_cache(max_batch, self.row_len)
        self.rows: list[_Row | None] = [None] * max_batch
        self.lengths = [0] * max_batch  # filled slots per row, tracked here
        self.last = torch.zeros(max_batch, dtype=torch.long)  # token each row feeds next
        self.stop_ids = set(lm.stop_token_ids())
        self.waiting: collections.deque[Request] = collections.deque()
        self.lock = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="zenlm-engine", daemon=True)
        self.step_s = 0.0  # moving average of a decode step, for Retry-After

    def _row_len(self, kv_budget_mb: float) -> int:
        config = self.model.config
        decoder = self.model.decoder if self.seq2seq else self.model
        # a norm is in the activation dtype, whatever the weights' format
        itemsize = (decoder.final_norm or decoder.blocks[0].attn_norm).weight.element_size()
        per_token = 2 * config.decoder_layers * config.kv_heads * config.dim_per_head * itemsize
        per_row = int(kv_budget_mb * 2**20 // (self.max_batch * per_token))
        if per_row < 16:
            raise ValueError(
                f"kv_budget_mb={kv_budget_mb} leaves {per_row} tokens per row for "
                f"max_batch={self.max_batch}; raise the budget or lower max_batch"
            )
        return min(config.context_length, per_row)

    # ---- the HTTP side (any thread) -------------------------------------------------

    def start(self) -> None:
        """Start the engine thread."""
        self.thread.start()

    def submit(self, request: Request) -> None:
        """Queue a request (already validated with `check`).

        Raises:
            QueueFullError: max_queue requests are already waiting.
        """
        with self.lock:
            if self.stopping:
                raise QueueFullError(retry_after=5)
            # Requests that free rows will take at the next step do not count as queued.
            if len(self.waiting) >= self.max_queue + self._free_rows():
                raise QueueFullError(self._retry_after())
            self.waiting.append(request)
            self.metrics.queue_depth.set(len(self.waiting))
            self.lock.notify()

    def check(self, prompts: Seq[Seq[int]], config: GenerationConfig, generate: bool = True,
              ) -> InvalidParameter | None:
        """Why this request can never run here (None if it can): too long, too many rows.

        A scoring-only request (`generate=False`) takes no cache rows: its prompts may
        fill the model's whole context.
        """
        if len(prompts) * config.num_return_sequences > self.max_batch:
            return InvalidParameter("n", (
                f"n x prompts = {len(prompts) * config.num_return_sequences} sequences; "
                f"this server runs at most {self.max_batch} at once"))
        for prompt in prompts:
            if not prompt:
                return InvalidParameter("prompt", "the prompt is empty")
            if self.seq2seq and len(prompt) > self.model.config.context_length:
                return InvalidParameter("prompt", (
                    f"the source has {len(prompt)} tokens; the encoder reads at most "
                    f"{self.model.config.context_length}"))
            if not generate:
                if len(prompt) > self.model.config.context_length:
                    return InvalidParameter("prompt", (
                        f"the prompt has {len(prompt)} tokens, beyond the model's context "
                        f"of {self.model.config.context_length}"))
                continue
            used = self.decoder_prompt_len(prompt)
            if used + config.max_new_tokens > self.row_len:
                return InvalidParameter("max_tokens", (
                    f"the prompt has {used} tokens and max_tokens is "
                    f"{config.max_new_tokens}: together {used + config.max_new_tokens}"
                    f", beyond this server's context of {self.row_len} tokens"))
        return None

    def decoder_prompt_len(self, prompt: Seq[int]) -> int:
        """Cache slots a prompt takes (an encoder-decoder's source takes its start token's)."""
        return 1 if self.seq2seq else len(prompt)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel what is left and stop the thread."""
        with self.lock:
            self.stopping = True
            for request in self.waiting:
                request.cancel()
                _emit(request, Failed("the server is shutting down"))
            self.waiting.clear()
            self.lock.notify()
        self.thread.join(timeout)

    def running_sequences(self) -> int:
        """Occupied cache rows."""
        return sum(slot is not None for slot in self.rows)

    def _free_rows(self) -> int:
        return self.rows.count(None)

    def _retry_after(self) -> int:
        # Roughly: the queue ahead drains at max_batch sequences per ~100 steps.
        estimate = self.step_s * 100 * (len(self.waiting) / self.max_batch + 1)
        return max(1, min(60, round(estimate)))

    # ---- the engine thread ----------------------------------------------------------

    @torch.inference_mode()
    def _run(self) -> None:
        while True:
            with self.lock:
                while not self.stopping and not self.waiting and not self.running_sequences():
                    self.lock.wait()
                if self.stopping:
                    break
            try:
                self._drop_cancelled()
                self._admit()
                if self.running_sequences():
                    self._step()
            except Exception:  # a bug in a batched step: fail the running requests, go on
                log.exception("decode step failed")
                for request in {slot.request for slot in self.rows if slot is not None}:
                    self._fail(request, "internal error while decoding")
        for request in {slot.request for slot in self.rows if slot is not None}:
            self._fail(request, "the server is shutting down")

    def _admit(self) -> None:
        """Move waiting requests into free rows, prefilled together."""
        batch: list[Request] = []
        tokens = 0
        with self.lock:
            free = self._free_rows()
            while self.waiting and self.waiting[0].rows_needed <= free:
                head = self.waiting[0]
                size = sum(len(p) for p in head.prompts)
                if batch and tokens + size > PREFILL_TOKENS:
                    break
                batch.append(self.waiting.popleft())
                free -= head.rows_needed
                tokens += size
            self.metrics.queue_depth.set(len(self.waiting))
        # Prompts to score are scored first; those that only score end there.
        batch = [request for request in batch if self._score(request)]
        if not batch:
            return
        try:
            self._prefill(batch)
        except Exception:  # find the culprit: retry one by one; only it fails
            log.exception("batched prefill failed; retrying requests one by one")
            for request in batch:
                if request.live == 0 and not request.finished:
                    try:
                        self._prefill([request])
                    except Exception as exc:
                        self._fail(request, f"prefill failed: {exc}")

    def _score(self, request: Request) -> bool:
        """Send the prompts' scores if asked. True if the request goes on to a cache row.

        A request for one greedy token after its scored prompts (what lm-eval's
        `local-completions` sends) takes that token from the same scoring pass, the
        likeliest after each prompt, and ends here without a cache row or a prefill.
        """
        one_greedy = request.generate and self._one_greedy_token(request)
        if request.score_prompts is not None:
            after = max(1, request.config.top_logprobs) if one_greedy else 0
            try:
                scored = score_prompts(self.model, request.prompts, request.score_prompts,
                                       after)
            except Exception as exc:  # this request fails; the batch goes on
                log.exception("scoring the prompts of request %d failed", request.id)
                self._fail(request, f"scoring the prompt failed: {exc}")
                return False
            for index, prompt in enumerate(scored):
                infos = [TokenInfo(t.token, t.logprob, t.top) for t in prompt.tokens]
                _emit(request, PromptScores(index, infos))
            if one_greedy:
                self._answer_greedy(request, [prompt.after for prompt in scored])
        if request.generate and not one_greedy:
            return True  # its prompt tokens are counted at prefill
        if not request.finished:
            prompt_tokens = sum(len(p) for p in request.prompts)
            self.metrics.tokens_in.inc(prompt_tokens)
            request.finished = True
            _emit(request, Done(prompt_tokens, request.completion_tokens))
        return False

    def _one_greedy_token(self, request: Request) -> bool:
        """Whether the request's one token is the argmax of the model's own logits."""
        config = request.config
        if request.score_prompts is None or config.max_new_tokens != 1:
            return False
        params = config.sampling()  # penalties on generated tokens: none before the first
        rules = self._sequence(request, 0, request.prompts[0]).rules
        return params.greedy and params.repetition_penalty == 1.0 and rules is None

    def _answer_greedy(self, request: Request, after: list[list[tuple[int, float]]]) -> None:
        """Each choice's one token: the likeliest after its prompt (see `_score`)."""
        config, n = request.config, request.config.num_return_sequences
        for p, (prompt, alternatives) in enumerate(zip(request.prompts, after, strict=True)):
            token, logprob = alternatives[0]
            top = alternatives[: config.top_logprobs] if config.top_logprobs else None
            for j in range(n):
                seq = self._sequence(request, p * n + j, prompt)
                if not seq.wants_logprobs:
                    logprob, top = None, None
                event = seq.accept(token, logprob, top)
                request.completion_tokens += 1
                self.metrics.tokens_out.inc()
                _emit(request, Delta(event.row, event.text, [TokenInfo(token, logprob, top)],
                                     event.finish_reason))

    def _sequence(self, request: Request, index: int, prompt: list[int],
                  cross: CrossContext | None = None) -> Sequence:
        """Choice `index` of `request` as a core Sequence (its rules, stops and text)."""
        config = request.config
        stop_ids = () if request.ignore_eos else (config.stop_token_ids or self.stop_ids)
        return Sequence(prompt, config, vocab_size=self.model.config.vocab_size, index=index,
                        stop_ids=stop_ids, tokenizer=self.lm.tokenizer, cross_cache=cross)

    def _prefill(self, requests: list[Request]) -> None:
        prompts = [(r, i, p) for r in requests for i, p in enumerate(r.prompts)]
        decoder_prompts, cache = open_rows(self.model, [p for _, _, p in prompts], 0)
        logits = prefill(self.model, decoder_prompts, cache)  # (P, V)
        rows, sources = [], []
        for index, (request, prompt_index, prompt) in enumerate(prompts):
            self.metrics.tokens_in.inc(len(prompt))
            cross = None
            if cache.cross is not None:  # this source's context, without the batch's padding
                cross = cache.cross.select(torch.tensor([index])).trim(len(prompt))
            n = request.config.num_return_sequences
            for j in range(n):
                rows.append(self._start_sequence(request, prompt_index * n + j,
                                                 decoder_prompts[index], cache, index, cross))
                sources.append(index)
        self._choose(rows, logits[torch.tensor(sources)])

    def _start_sequence(
        self, request: Request, index: int, prompt: list[int], cache: KVCache, cache_row: int,
        cross: CrossContext | None = None,
    ) -> int:
        """Put choice `index` of `request` in a free row; its prompt is `cache`'s row.

        `cross` is its source's context (encoder-decoders).
        """
        seq = self._sequence(request, index, prompt, cross)
        row = self.rows.index(None)
        self.cache.write_row(row, cache, cache_row)
        self.rows[row] = _Row(seq, request)
        self.cross = None  # rows changed: restack the contexts at the next step
        self.lengths[row] = len(prompt)
        request.live += 1
        self.metrics.running.set(self.running_sequences())
        return row

    def _step(self) -> None:
        """One decode step over rows [0, highest occupied row]."""
        start = time.perf_counter()
        hi = max(i for i, slot in enumerate(self.rows) if slot is not None) + 1
        view = self.cache.narrow_rows(hi)
        view.set_lengths(self.lengths[:hi])  # free rows read length 0: harmless
        if self.seq2seq:
            view.cross = self._cross_rows(hi)
        logits = decode_step(self.model, self.last[:hi], view)  # (hi, V)
        running = [row for row in range(hi) if self.rows[row] is not None]
        for row in running:
            self.lengths[row] += 1
        self._choose(running, logits[torch.tensor(running)])
        elapsed = time.perf_counter() - start
        self.step_s = 0.9 * self.step_s + 0.1 * elapsed if self.step_s else elapsed

    def _cross_rows(self, hi: int) -> CrossContext:
        """The contexts of rows [0, hi), stacked; a free row borrows a running row's."""
        if self.cross is None or self.cross.rows != hi:
            running = [slot.seq.cross_cache for slot in self.rows[:hi] if slot is not None]
            self.cross = CrossContext.stack([
                slot.seq.cross_cache if slot is not None else running[0]
                for slot in self.rows[:hi]])
        return self.cross

    def _choose(self, rows: list[int], logits: torch.Tensor) -> None:
        """Choose the next token of each of `rows` (logits (len(rows), V)) and deliver it."""
        slots = [self.rows[row] for row in rows]
        seqs = [slot.seq for slot in slots]
        try:
            tokens = sample_rows(logits, seqs)
            scores = logprob_rows(logits, seqs, tokens)
        except Exception as exc:  # a bug in batched sampling: these rows' requests fail
            log.exception("choosing tokens failed")
            for request in {slot.request for slot in slots}:
                self._fail(request, f"generation failed: {exc}")
            return
        for row, slot, token, score in zip(rows, slots, tokens, scores, strict=True):
            request = slot.request
            if request.finished:  # another of its rows failed this step
                continue
            try:
                self._deliver(row, slot.seq.accept(token, *score))
            except Exception as exc:  # one request's failure stays its own
                log.exception("request %d failed", request.id)
                self._fail(request, f"generation failed: {exc}")

    def _deliver(self, row: int, event: TokenEvent) -> None:
        """Send a row's new token and text; free the row if its sequence ended."""
        slot = self.rows[row]
        request = slot.request
        request.completion_tokens += 1
        self.last[row] = event.token
        now = time.perf_counter()
        if len(slot.seq.tokens) == 1:
            self.metrics.ttft.observe(now - request.submitted)
        else:
            self.metrics.itl.observe(now - slot.last_token_at)
        slot.last_token_at = now
        self.metrics.tokens_out.inc()
        info = TokenInfo(event.token, event.logprob, event.top_logprobs)
        _emit(request, Delta(event.row, event.text, [info], event.finish_reason))
        if event.finish_reason is not None:
            self._free(row)
            if request.live == 0:
                request.finished = True
                prompt_tokens = sum(len(p) for p in request.prompts)
                _emit(request, Done(prompt_tokens, request.completion_tokens))

    def _free(self, row: int) -> None:
        slot = self.rows[row]
        self.rows[row] = None
        self.cross = None
        self.lengths[row] = 0
        self.last[row] = 0
        slot.request.live -= 1
        self.metrics.running.set(self.running_sequences())

    def _drop_cancelled(self) -> None:
        with self.lock:
            kept = [r for r in self.waiting if not r.cancelled]
            if len(kept) != len(self.waiting):
                self.waiting = collections.deque(kept)
                self.metrics.queue_depth.set(len(self.waiting))
        for row, slot in enumerate(self.rows):
            if slot is not None and slot.request.cancelled:
                self._free(row)

    def _fail(self, request: Request, message: str) -> None:
        for row, slot in enumerate(self.rows):
            if slot is not None and slot.request is request:
                self._free(row)
        if not request.finished:
            request.finished = True
            _emit(request, Failed(message))


def _emit(request: Request, event: Event) -> None:
    """Hand an event to the request's listener; a broken listener cancels only its request."""
    try:
        request.emit(event)
    except Exception:
        log.exception("request %d: delivering an event failed", request.id)
        request.cancel()
