"""The continuous-batching engine against the one-prompt generation loop (the oracle)."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from zenlm.generate import GenerationConfig, Sequence, sample_rows
from zenlm.generate.sampling import warp
from zenlm.serve.engine import (
    Delta,
    Done,
    Engine,
    Failed,
    QueueFullError,
    Request,
)
from zenlm.serve.metrics import Metrics

from .conftest import fail_sequences_seeded


class Collector:
    """Gathers one request's events; `done` is set on Done or Failed."""

    def __init__(self) -> None:
        self.events: list = []
        self.done = threading.Event()

    def __call__(self, event) -> None:
        self.events.append(event)
        if isinstance(event, Done | Failed):
            self.done.set()

    def tokens(self, choice: int = 0) -> list[int]:
        return [t.token for e in self.events if isinstance(e, Delta) and e.choice == choice
                for t in e.tokens]

    def text(self, choice: int = 0) -> str:
        return "".join(e.text for e in self.events if isinstance(e, Delta) and e.choice == choice)


@pytest.fixture
def engine(tiny_lm):
    engine = Engine(tiny_lm, Metrics(), max_batch=4, max_queue=8)
    engine.start()
    yield engine
    engine.shutdown()


def submit(engine, prompt, ignore_eos=True, **options) -> Collector:
    collector = Collector()
    config = GenerationConfig(**{"max_new_tokens": 12, **options})
    config.validate()
    engine.submit(Request([list(prompt)], config, collector, ignore_eos=ignore_eos))
    return collector


def reference(lm, prompt, max_new_tokens) -> list[int]:
    return lm.generate_ids(prompt, max_new_tokens=max_new_tokens, stop_token_ids=()).token_ids


def test_kv_cache_write_row_then_ragged_step_matches_separate_caches(tiny_lm):
    model = tiny_lm.model
    prompts = [[5, 6, 7, 8, 9], [10, 11]]
    with torch.inference_mode():
        alone = []
        big = model.new_cache(3, 16)
        for row, prompt in enumerate(prompts):
            cache = model.new_cache(1, 16)
            model(torch.tensor([prompt]), cache=cache)
            big.write_row(row * 2, cache)  # rows 0 and 2; row 1 stays free
            alone.append(model(torch.tensor([[42]]), cache=cache)[0, -1])
        assert big.lengths.tolist() == [5, 0, 2]
        view = big.narrow_rows(3)
        together = model(torch.tensor([[42], [0], [42]]), cache=view)[:, -1]
    torch.testing.assert_close(together[0], alone[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(together[2], alone[1], rtol=1e-5, atol=1e-5)
    assert big.keys[0].data_ptr() == view.keys[0].data_ptr()  # the view writes through


def test_sequences_joining_and_leaving_match_one_at_a_time(engine, tiny_lm):
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17], [18] * 9, [20, 21, 22]]
    lengths = [30, 6, 17, 11, 9]
    first = submit(engine, prompts[0], max_new_tokens=lengths[0])
    deadline = time.monotonic() + 30
    while len(first.tokens()) < 3:  # the others join a batch already running
        assert time.monotonic() < deadline, "no 3 tokens in 30 s"
        time.sleep(0.001)
    rest = [submit(engine, p, max_new_tokens=n) for p, n in zip(prompts[1:], lengths[1:], strict=True)]
    for collector in [first, *rest]:  # 5 requests, 4 rows: one waits for a free row
        assert collector.done.wait(30)
    for prompt, n, collector in zip(prompts, lengths, [first, *rest], strict=True):
        assert collector.tokens() == reference(tiny_lm, prompt, n)
        assert isinstance(collector.events[-1], Done)
        assert collector.events[-1].completion_tokens == n
    assert engine.running_sequences() == 0


def test_seeded_sampling_reproducible_whatever_the_batch(engine):
    options = dict(temperature=1.0, top_p=0.9, seed=1234, max_new_tokens=16)
    alone = submit(engine, [5, 6, 7], **options)
    assert alone.done.wait(30)
    crowd = [submit(engine, [9, 9, 9], temperature=1.0, max_new_tokens=20) for _ in range(2)]
    again = submit(engine, [5, 6, 7], **options)
    assert again.done.wait(30) and all(c.done.wait(30) for c in crowd)
    assert again.tokens() == alone.tokens()


def test_n_choices_differ_and_share_the_prompt(engine):
    collector = Collector()
    config = GenerationConfig(max_new_tokens=10, temperature=1.0, seed=7,
                              num_return_sequences=3)
    engine.submit(Request([[5, 6, 7]], config, collector, ignore_eos=True))
    assert collector.done.wait(30)
    choices = [collector.tokens(i) for i in range(3)]
    assert all(len(c) == 10 for c in choices)
    assert len({tuple(c) for c in choices}) > 1
    assert collector.events[-1].prompt_tokens == 3


def test_cancel_frees_the_row_within_a_step(engine):
    collector = submit(engine, [5, 6, 7], max_new_tokens=1000)
    deadline = time.monotonic() + 30
    while len(collector.tokens()) < 2:
        assert time.monotonic() < deadline, "no 2 tokens in 30 s"
        time.sleep(0.001)
    engine.rows[0].request.cancel()
    at_cancel = len(collector.tokens())  # read after cancel: what follows is the engine's doing
    deadline = time.monotonic() + 30
    while engine.running_sequences():
        assert time.monotonic() < deadline, "the cancelled row still runs after 30 s"
        time.sleep(0.001)
    assert len(collector.tokens()) <= at_cancel + 2  # the step in flight, at most


def test_one_failing_request_leaves_the_others_running(engine, tiny_lm, monkeypatch):
    fail_sequences_seeded(monkeypatch, seed=666, at_token=4)
    good = submit(engine, [5, 6, 7], max_new_tokens=20)
    bad = submit(engine, [8, 9], max_new_tokens=20, temperature=0.5, seed=666)
    assert bad.done.wait(30) and good.done.wait(30)
    assert isinstance(bad.events[-1], Failed) and "boom" in bad.events[-1].message
    assert good.tokens() == reference(tiny_lm, [5, 6, 7], 20)


def test_a_failing_draw_fails_its_request_and_frees_its_rows(engine, tiny_lm, monkeypatch):
    import zenlm.serve.engine as module

    real = module.sample_rows

    def broken(logits, seqs):
        if any(seq.config.seed == 777 for seq in seqs):
            raise RuntimeError("bad draw")
        return real(logits, seqs)

    monkeypatch.setattr(module, "sample_rows", broken)
    bad = submit(engine, [5, 6, 7], temperature=0.5, seed=777, num_return_sequences=2)
    assert bad.done.wait(30)
    assert isinstance(bad.events[-1], Failed) and "bad draw" in bad.events[-1].message
    assert engine.running_sequences() == 0  # no row is left waiting for a token
    good = submit(engine, [5, 6, 7], max_new_tokens=8)
    assert good.done.wait(30) and good.tokens() == reference(tiny_lm, [5, 6, 7], 8)


def test_batched_draws_follow_the_distribution():
    """`sample_rows`, the one sampler of every driver: three seeded rows drawn together
    follow softmax(warp(logits)) (each inverting its CDF at a draw of its own)."""
    torch.manual_seed(0)
    logits = torch.randn(1, 6) * 2
    config = GenerationConfig(temperature=0.7, top_k=4, max_new_tokens=1)
    seqs = [Sequence([1], config, vocab_size=6, index=i) for i in range(3)]
    for seq in seqs:
        seq.generator = torch.Generator().manual_seed(seq.index + 1)
    draws = torch.zeros(6)
    for _ in range(4000):
        for token in sample_rows(logits.expand(3, 6), seqs):
            draws[token] += 1
    expected = torch.softmax(warp(logits, config.sampling()), -1)[0]
    assert draws[expected == 0].sum() == 0  # top-k masked tokens are never drawn
    torch.testing.assert_close(draws / draws.sum(), expected, atol=0.015, rtol=0)


def test_queue_limit_and_request_checks(tiny_lm):
    engine = Engine(tiny_lm, Metrics(), max_batch=1, max_queue=1)  # not started: nothing runs
    config = GenerationConfig(max_new_tokens=4)
    engine.submit(Request([[5]], config, Collector()))  # will take the free row
    engine.submit(Request([[5]], config, Collector()))  # queued
    with pytest.raises(QueueFullError) as caught:
        engine.submit(Request([[5]], config, Collector()))
    assert caught.value.retry_after >= 1
    too_many = engine.check([[5], [6]], config)
    assert too_many.param == "n" and "at most 1" in too_many.message
    too_long = engine.check([[5] * 2040], GenerationConfig(max_new_tokens=100))
    assert too_long.param == "max_tokens" and "context" in too_long.message
    assert engine.check([[5]], config) is None


def test_kv_budget_sets_tokens_per_row(tiny_lm):
    config = tiny_lm.model.config
    per_token = 2 * config.n_layers * config.kv_heads * config.dim_per_head * 4
    engine = Engine(tiny_lm, Metrics(), max_batch=8, kv_budget_mb=per_token * 8 * 100 / 2**20)
    assert engine.row_len == 100
    with pytest.raises(ValueError, match="kv_budget_mb"):
        Engine(tiny_lm, Metrics(), max_batch=8, kv_budget_mb=0.0001)
