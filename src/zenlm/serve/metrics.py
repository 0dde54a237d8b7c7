"""Prometheus metrics of one server (a registry of its own, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Requests by status, tokens in and out, queue depth, running sequences, latencies."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("zenlm_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=r)
        self.tokens_in = Counter("zenlm_prompt_tokens", "Prompt tokens prefilled", registry=r)
        self.tokens_out = Counter("zenlm_generated_tokens", "Tokens generated", registry=r)
        self.queue_depth = Gauge("zenlm_queue_depth", "Requests waiting for a batch row",
                                 registry=r)
        self.running = Gauge("zenlm_running_sequences", "Sequences in the running batch",
                             registry=r)
        self.ttft = Histogram("zenlm_time_to_first_token_seconds",
                              "From request arrival to its first token",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("zenlm_inter_token_latency_seconds",
                             "Between consecutive tokens of one sequence",
                             buckets=LATENCY_BUCKETS, registry=r)
