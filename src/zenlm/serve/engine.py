"""The serving engine: continuous batching over one static, preallocated KV cache.

One background thread owns the model. Requests wait in a bounded queue; at every
decode step the engine admits waiting requests into free cache rows (prefilled
together in a cache of their own, then copied in with `KVCache.write_row`), runs one
forward pass over all occupied rows, chooses each row's token with that row's own
sampling parameters, penalties and random generator, and frees rows whose sequence
finished or whose client went away. Sequences thus join and leave the running batch
at every step.

Results go back through a callback (`emit`) called on the engine thread; the HTTP
layer forwards them to its event loop.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from zenlm.generate import GenerationConfig, TextStream
from zenlm.generate.sampling import SamplingParams, sample_next, token_logprobs, warp
from zenlm.nn.kv_cache import KVCache
from zenlm.serve.metrics import Metrics

log = logging.getLogger("zenlm.serve")

PREFILL_TOKENS = 2048  # at most this many padded prompt tokens per batched prefill


class QueueFullError(Exception):
    """The waiting queue is at its limit (the HTTP layer answers 429)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("the server is at capacity; retry later")
        self.retry_after = retry_after


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
class Done:
    """A request finished: every choice has ended."""

    prompt_tokens: int
    completion_tokens: int


@dataclass
class Failed:
    """A request failed; the others go on."""

    message: str


Event = Delta | Done | Failed


@dataclass(eq=False)  # compared and hashed by identity
class Request:
    """One API request: each prompt is answered `config.num_return_sequences` times.

    Attributes:
        prompts: Token ids of each prompt.
        config: Validated generation parameters (stop strings included).
        emit: Called on the engine thread with each Event of this request.
        ignore_eos: Generate through stop tokens (benchmarks, tests).
    """

    prompts: list[list[int]]
    config: GenerationConfig
    emit: Callable[[Event], None]
    ignore_eos: bool = False
    id: int = field(default_factory=itertools.count().__next__)
    submitted: float = field(default_factory=time.perf_counter)
    cancelled: bool = False
    finished: bool = False
    live: int = 0  # sequences still running
    completion_tokens: int = 0

    @property
    def rows_needed(self) -> int:
        """Cache rows this request occupies while it runs."""
        return len(self.prompts) * self.config.num_return_sequences

    def cancel(self) -> None:
        """Stop this request at the engine's next step (safe from any thread)."""
        self.cancelled = True


class _Sequence:
    """One choice of one request, running in one cache row."""

    def __init__(self, request: Request, choice: int, prompt_len: int, tokenizer, vocab: int):
        config = request.config
        self.request, self.choice, self.prompt_len = request, choice, prompt_len
        self.params = config.sampling()
        self.limit = prompt_len + config.max_new_tokens
        self.generated = 0
        self.text = TextStream(tokenizer, config.stop)
        self.generator = None
        if config.seed is not None:  # choice j draws from seed + j: reproducible per choice
            self.generator = torch.Generator().manual_seed((config.seed + choice) % 2**63)
        self.seen = self.counts = None
        if self.params.repetition_penalty != 1.0:
            self.seen = torch.zeros(1, vocab, dtype=torch.bool)
        if self.params.presence_penalty or self.params.frequency_penalty:
            self.counts = torch.zeros(1, vocab, dtype=torch.int32)
        self.last_token_at = 0.0

    @property
    def batchable(self) -> bool:
        """Without penalties, its token is drawn together with other rows' (`choose_rows`)."""
        return self.seen is None and self.counts is None

    def uniform(self) -> float:
        """One draw in [0, 1) from this sequence's own generator (its seed)."""
        return float(torch.rand((), generator=self.generator))

    def choose(self, logits: torch.Tensor) -> int:
        """Pick this row's token from its logits (1, V), penalties included."""
        return int(sample_next(logits, self.params, seen=self.seen, counts=self.counts,
                               generator=self.generator)[0])

    def info(self, token: int, logits: torch.Tensor) -> TokenInfo:
        """The token, with its log-probabilities (from logits (1, V)) if the request wants them."""
        info = TokenInfo(token)
        config = self.request.config
        if config.logprobs or config.top_logprobs:
            chosen, values, ids = token_logprobs(logits, torch.tensor([token]),
                                                 config.top_logprobs)
            info.logprob = float(chosen[0])
            if ids is not None:
                info.top = list(zip(ids[0].tolist(), values[0].tolist(), strict=True))
        return info

    def flush(self) -> str:
        """The text not yet sent, at the end: bytes of an unfinished character included."""
        tail = self.text.finish()
        full = self.text.tokenizer.decode(self.text.ids, skip_special_tokens=True)
        # An unfinished character decodes to U+FFFD: send it, as a whole decode would.
        if len(full) > self.text.emitted and full.startswith(self.text.text[: self.text.emitted]):
            tail += full[self.text.emitted:]
            self.text.emitted = len(full)
        return tail

    def record(self, token: int) -> None:
        if self.seen is not None:
            self.seen[0, token] = True
        if self.counts is not None:
            self.counts[0, token] += 1


def choose_rows(logits: torch.Tensor, seqs: dict[int, _Sequence]) -> dict[int, int]:
    """Tokens of batchable rows: one warp per sampling setting, one draw per row.

    Args:
        logits: (B, V) logits; `seqs` maps a row of it to its sequence.
        seqs: Sequences without penalties.

    Returns:
        Row -> token. Greedy rows take the argmax. Sampled rows share softmax and
        cumsum, then each inverts the CDF at a uniform draw from its own generator,
        so a seeded request samples the same tokens whatever else is in the batch.
    """
    groups: dict[SamplingParams, list[int]] = collections.defaultdict(list)
    for row, seq in seqs.items():
        groups[seq.params].append(row)
    out: dict[int, int] = {}
    for params, rows in groups.items():
        scores = logits[torch.tensor(rows)]  # (G, V)
        if params.greedy:
            tokens = scores.argmax(-1)
        else:
            cdf = torch.softmax(warp(scores, params), dim=-1).cumsum(-1)  # (G, V)
            # Scale by the total (float32 sums fall a little short of 1): the draw then
            # always lands on a token of non-zero probability.
            u = torch.tensor([seqs[r].uniform() for r in rows]) * cdf[:, -1]  # (G,)
            tokens = torch.searchsorted(cdf, u[:, None], right=True)[:, 0]
            tokens = tokens.clamp_(max=scores.shape[-1] - 1)
        out.update(zip(rows, tokens.tolist(), strict=True))
    return out


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
        self.max_batch, self.max_queue = max_batch, max_queue
        self.row_len = self._row_len(kv_budget_mb)
        self.cache = self.model.new_cache(max_batch, self.row_len)
        self.rows: list[_Sequence | None] = [None] * max_batch
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
        itemsize = self.model.final_norm.weight.element_size()
        per_token = 2 * config.n_layers * config.kv_heads * config.dim_per_head * itemsize
        per_row = int(kv_budget_mb * 2**20 // (self.max_batch * per_token))
        if per_row < 16:
            raise ValueError(
                f"kv_budget_mb={kv_budget_mb} leaves {per_row} tokens per row for "
                f"max_batch={self.max_batch}; raise the budget or lower max_batch"
            )
        return min(config.max_seq_len, per_row)

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

    def check(self, prompts: Sequence[Sequence[int]], config: GenerationConfig) -> str | None:
        """Why this request can never run here (None if it can): too long, too many rows."""
        if len(prompts) * config.num_return_sequences > self.max_batch:
            return (f"n x prompts = {len(prompts) * config.num_return_sequences} sequences; "
                    f"this server runs at most {self.max_batch} at once")
        for prompt in prompts:
            if not prompt:
                return "the prompt is empty"
            if len(prompt) + config.max_new_tokens > self.row_len:
                return (f"the prompt has {len(prompt)} tokens and max_tokens is "
                        f"{config.max_new_tokens}: together {len(prompt) + config.max_new_tokens}"
                        f", beyond this server's context of {self.row_len} tokens")
        return None

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
        return sum(seq is not None for seq in self.rows)

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
                for request in {seq.request for seq in self.rows if seq is not None}:
                    self._fail(request, "internal error while decoding")
        for request in {seq.request for seq in self.rows if seq is not None}:
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

    def _prefill(self, requests: list[Request]) -> None:
        prompts = [(r, i, p) for r in requests for i, p in enumerate(r.prompts)]
        longest = max(len(p) for _, _, p in prompts)
        ids = torch.zeros(len(prompts), longest, dtype=torch.long)  # right-padded
        for row, (_, _, prompt) in enumerate(prompts):
            ids[row, : len(prompt)] = torch.tensor(prompt)
        cache = self.model.new_cache(len(prompts), longest)
        hidden = self.model.hidden_states(ids, cache=cache)  # (P, T, d)
        lengths = torch.tensor([len(p) for _, _, p in prompts])
        cache.set_lengths(lengths)  # padded slots are forgotten
        last = hidden[torch.arange(len(prompts)), lengths - 1]
        logits = self.model.lm_head(last).float()  # (P, V)
        for index, (request, prompt_index, prompt) in enumerate(prompts):
            self.metrics.tokens_in.inc(len(prompt))
            n = request.config.num_return_sequences
            for j in range(n):
                self._start_sequence(request, prompt_index * n + j, prompt, cache, index,
                                     logits[index: index + 1])

    def _start_sequence(
        self, request: Request, choice: int, prompt: list[int], cache: KVCache,
        cache_row: int, logits: torch.Tensor,
    ) -> None:
        row = self.rows.index(None)
        seq = _Sequence(request, choice, len(prompt), self.lm.tokenizer,
                        self.model.config.vocab_size)
        if seq.seen is not None:
            seq.seen[0, torch.tensor(prompt)] = True
        self.cache.write_row(row, cache, cache_row)
        self.rows[row] = seq
        self.lengths[row] = len(prompt)
        request.live += 1
        self.metrics.running.set(self.running_sequences())
        token = choose_rows(logits, {0: seq})[0] if seq.batchable else seq.choose(logits)
        self._deliver(row, seq.info(token, logits))

    def _step(self) -> None:
        """One decode step over rows [0, highest occupied row]."""
        start = time.perf_counter()
        hi = max(i for i, seq in enumerate(self.rows) if seq is not None) + 1
        view = self.cache.narrow_rows(hi)
        view.set_lengths(self.lengths[:hi])  # free rows read length 0: harmless
        logits = self.model(self.last[:hi, None], cache=view)[:, 0].float()  # (hi, V)
        for row in range(hi):
            if self.rows[row] is not None:
                self.lengths[row] += 1
        running = {r: seq for r, seq in enumerate(self.rows[:hi]) if seq is not None}
        batched = choose_rows(logits, {r: s for r, s in running.items() if s.batchable})
        for row, seq in running.items():
            try:
                token = batched[row] if row in batched else seq.choose(logits[row: row + 1])
                self._deliver(row, seq.info(token, logits[row: row + 1]))
            except Exception as exc:  # one request's failure stays its own
                log.exception("request %d failed", seq.request.id)
                self._fail(seq.request, f"generation failed: {exc}")
        elapsed = time.perf_counter() - start
        self.step_s = 0.9 * self.step_s + 0.1 * elapsed if self.step_s else elapsed

    def _deliver(self, row: int, info: TokenInfo) -> None:
        """Record a row's new token, send its text, and free the row if it ended."""
        seq = self.rows[row]
        request = seq.request
        token = info.token
        seq.record(token)
        seq.generated += 1
        request.completion_tokens += 1
        self.last[row] = token
        now = time.perf_counter()
        if seq.generated == 1:
            self.metrics.ttft.observe(now - request.submitted)
        else:
            self.metrics.itl.observe(now - seq.last_token_at)
        seq.last_token_at = now
        self.metrics.tokens_out.inc()
        finish = None
        if token in self.stop_ids and not request.ignore_eos:
            finish, text = "stop", seq.flush()
        else:
            text = seq.text.push(token)
            if seq.text.stopped:
                finish = "stop"
            elif seq.prompt_len + seq.generated >= seq.limit:
                finish, text = "length", text + seq.flush()
        _emit(request, Delta(seq.choice, text, [info], finish))
        if finish is not None:
            self._free(row)
            if request.live == 0:
                request.finished = True
                prompt_tokens = sum(len(p) for p in request.prompts)
                _emit(request, Done(prompt_tokens, request.completion_tokens))

    def _free(self, row: int) -> None:
        seq = self.rows[row]
        self.rows[row] = None
        self.lengths[row] = 0
        self.last[row] = 0
        seq.request.live -= 1
        self.metrics.running.set(self.running_sequences())

    def _drop_cancelled(self) -> None:
        with self.lock:
            kept = [r for r in self.waiting if not r.cancelled]
            if len(kept) != len(self.waiting):
                self.waiting = collections.deque(kept)
                self.metrics.queue_depth.set(len(self.waiting))
        for row, seq in enumerate(self.rows):
            if seq is not None and seq.request.cancelled:
                self._free(row)

    def _fail(self, request: Request, message: str) -> None:
        for row, seq in enumerate(self.rows):
            if seq is not None and seq.request is request:
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
